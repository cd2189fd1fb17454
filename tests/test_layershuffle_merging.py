"""Merged models rebuilt from known layers, and ensembles (painters.layershuffle.merging)."""

import json

import pytest
import torch

from painters import surgery
from painters.layershuffle import merging, training, vision
from painters.plan import Plan, parse

DEPTH = 4


@pytest.fixture(scope="module")
def data():
    return vision.load_digits(0)


@pytest.fixture(scope="module")
def trained(data):
    """Three tiny ViTs of different seeds with their position modules (a few steps: weights differ)."""
    models, modules = [], []
    for seed in range(3):
        model = vision.tiny_vit(data, layers=DEPTH, hidden=32, seed=seed)
        settings = training.TrainSettings(variant="layershuffle_position", seed=seed, steps=5, batch_size=16)
        extra, _ = training.train(model, data.train, settings, log=lambda _: None)
        models.append(model)
        modules.append(extra)
    return models, modules


def test_assignments_are_seeded_distinct_and_permutations_when_there_are_enough_models():
    drawn = merging.merge_assignments(n_models=4, depth=4, n_merges=10, seed=0)
    assert drawn == merging.merge_assignments(4, 4, 10, 0) != merging.merge_assignments(4, 4, 10, 1)
    assert len(set(drawn)) == 10 and all(sorted(a) == [0, 1, 2, 3] for a in drawn)
    few = merging.merge_assignments(n_models=3, depth=6, n_merges=20, seed=0)
    # fewer models than layers: each gives its share (2 of 6 layers), no merge twice
    assert len(set(few)) == 20 and all(sorted(a) == [0, 0, 1, 1, 2, 2] for a in few)
    assert merging.distinct_merges(3, 6) == 90 and merging.distinct_merges(2, 3) == 3 and merging.distinct_merges(4, 3) == 24
    assert sorted(merging.merge_assignments(2, 3, 3, seed=5)) == [(0, 0, 1), (0, 1, 0), (1, 0, 0)]
    with pytest.raises(ValueError, match="make 1..3 distinct merges"):
        merging.merge_assignments(2, 3, 4, seed=0)
    with pytest.raises(ValueError, match="at least 2 trained models"):
        merging.merge_assignments(1, 3, 1, seed=0)


def test_a_merge_holds_each_layer_of_its_model_and_the_rest_of_one(data, trained):
    """If this fails, a merged model is not the layers it claims to be made of."""
    models, modules = trained
    assignment = (2, 0, 1, 2)
    merged, merged_modules = merging.merge(models, assignment, modules, rest=1)
    for position, source in enumerate(assignment):
        for a, b in zip(surgery.layer_list(merged)[position].state_dict().values(),
                        surgery.layer_list(models[source])[position].state_dict().values()):
            assert torch.equal(a, b)
        for a, b in zip(merged_modules.projections[position].state_dict().values(),
                        modules[source].projections[position].state_dict().values()):
            assert torch.equal(a, b)
    assert torch.equal(merged.classifier.weight, models[1].classifier.weight)
    assert torch.equal(merged_modules.embedding.weight, modules[1].embedding.weight)
    # its logits, computed by hand from the source models' own layers
    plan = Plan(variant="order", order=((3,), (1,), (0,), (2,)))
    images = data.test.images(range(6))
    with torch.no_grad():
        logits, _ = training.forward(merged, merged_modules, plan, images)
        hidden = models[1].vit.embeddings(images)
        for position, (layer,) in enumerate(plan.order):
            source = assignment[layer]
            embedding = modules[1].embedding.weight[position].expand(*hidden.shape[:-1], -1)
            hidden = hidden + modules[source].projections[layer](torch.cat([hidden, embedding], dim=-1))
            hidden = surgery.output_state(models[source].vit.layers[layer](hidden))
        expected = models[1].classifier(models[1].vit.layernorm(hidden)[:, 0])
    torch.testing.assert_close(logits, expected)


def test_a_model_merged_with_itself_is_itself(data, trained):
    models, modules = trained
    merged, merged_modules = merging.merge(models, (0,) * DEPTH, modules, rest=0)
    with torch.no_grad():
        torch.testing.assert_close(training.forward(merged, merged_modules, parse("baseline"), data.test.images(range(8)))[0],
                                   training.forward(models[0], modules[0], parse("baseline"), data.test.images(range(8)))[0],
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs one model index in 0..2 per layer"):
        merging.merge(models, (0, 1, 5, 0), modules)


def test_an_ensemble_averages_its_models_logits(data, trained):
    models, modules = trained
    plan = parse("shuffle_all-S3")
    images = data.test.images(range(10))
    with torch.no_grad():
        each = [training.forward(m, x, plan, images)[0] for m, x in zip(models, modules)]
    torch.testing.assert_close(merging.ensemble_logits(models, modules, plan, images), sum(each) / 3)
    # its accuracy: the share of test images whose mean logits' argmax is the label, under each plan
    plans = [plan, parse("baseline")]
    all_images = data.test.images(range(len(data.test)))
    with torch.no_grad():
        expected = [int((merging.ensemble_logits(models, modules, p, all_images).argmax(-1) == data.test.labels).sum()) / len(data.test)
                    for p in plans]
    assert merging.ensemble_accuracies(models, modules, plans, data.test, batch_size=100) == expected


@pytest.fixture(scope="module")
def trained_folders(data, trained, tmp_path_factory):
    """The three trained models as folders `painters train-vision` writes (and one of another variant)."""
    models, modules = trained
    root = tmp_path_factory.mktemp("trained")
    facts = {"data": "digits", "data_seed": 0, "base_model": "tiny"}
    folders = []
    for seed, (model, extra) in enumerate(zip(models, modules)):
        settings = training.TrainSettings(variant="layershuffle_position", seed=seed, steps=5, batch_size=16)
        folders.append(root / f"vit.layershuffle_position.s{seed}")
        training.save_trained(folders[-1], model, extra, settings, facts)
    other = root / "vit.layershuffle.s0"
    training.save_trained(other, vision.tiny_vit(data, layers=DEPTH, hidden=32, seed=0), None,
                          training.TrainSettings(variant="layershuffle", steps=5, batch_size=16), facts)
    return folders, other


def test_merge_job_scores_each_merge_and_the_ensemble_and_keeps_finished_ones(data, trained, trained_folders, tmp_path):
    from painters import results
    from painters.cli import main

    models, modules = trained
    folders, _ = trained_folders
    args = ["merge-vision", "--trained", *map(str, folders), "--name", "vit.layershuffle_position", "--merges", "3",
            "--merge-seed", "1", "--plans", "baseline", "shuffle_all-S2", "--out", str(tmp_path)]
    assert main(args) == 0
    names = sorted(p.name for p in (tmp_path / "scores").iterdir())
    assert names == ["vit.layershuffle_position.ensemble", *(f"vit.layershuffle_position.m{i}" for i in range(3))]
    assignments = merging.merge_assignments(3, DEPTH, 3, seed=1)
    for index, assignment in enumerate(assignments):
        merged, merged_modules = merging.merge(models, assignment, modules)
        for key in ("baseline", "shuffle_all-S2"):
            row = results.read_score_file(results.score_path(tmp_path, f"vit.layershuffle_position.m{index}", key, "digits")).row(0, named=True)
            expected = training.accuracy(merged, merged_modules, parse(key), data.test)
            assert row["value"] == expected and row["plan"] == key and row["n_samples"] == len(data.test)
            recorded = json.loads(row["settings"])["training"]
            assert recorded["assignment"] == list(assignment) and [s["seed"] for s in recorded["merged_from"]] == [0, 1, 2]
    ensemble = results.read_score_file(results.score_path(tmp_path, "vit.layershuffle_position.ensemble", "shuffle_all-S2", "digits"))
    assert ensemble["value"][0] == merging.ensemble_accuracies(models, modules, [parse("shuffle_all-S2")], data.test)[0]
    # a rerun keeps every finished score
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "scores").rglob("*.parquet")}
    assert main(args) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "scores").rglob("*.parquet")} == before


def test_merge_job_refuses_models_trained_otherwise_and_too_many_merges(trained_folders, tmp_path, capsys):
    from painters.cli import main

    folders, other = trained_folders
    common = ["--name", "vit.x", "--plans", "baseline", "--out", str(tmp_path)]
    assert main(["merge-vision", "--trained", str(folders[0]), str(other), "--merges", "1", *common]) == 2
    assert "trained otherwise than" in capsys.readouterr().err
    assert main(["merge-vision", "--trained", *map(str, folders[:2]), "--merges", "7", *common]) == 2
    assert "make 1..6 distinct merges" in capsys.readouterr().err
    assert main(["merge-vision", "--trained", str(folders[0]), "--merges", "1", *common]) == 2
    assert "at least 2 trained models" in capsys.readouterr().err
    assert not (tmp_path / "scores").exists()


def test_a_merged_score_is_stale_when_a_source_model_or_the_merge_changes():
    from painters.results import stale_reason

    def sources(seeds, steps=30):
        return [training.TrainSettings(variant="layershuffle", seed=s, steps=steps).recorded() for s in seeds]

    def recorded(training_dict):
        return {"settings": json.dumps({"dtype": "float32", "training": training_dict})}

    wanted = {"fewshot_seed": None, "limit": None, "bootstrap_iters": None, "dtype": "float32", "max_gen_toks": None}
    made = merging.merged_training(sources([0, 1]), (0, 1, 1, 0))
    assert stale_reason(recorded(made), {**wanted, "training": made}) is None
    assert stale_reason(recorded(made), {**wanted, "training": merging.merged_training(sources([0, 1], 40), (0, 1, 1, 0))}) == \
        "its model was merged from models trained with steps 30, the config asks for 40"
    assert stale_reason(recorded(made), {**wanted, "training": merging.merged_training(sources([0, 1, 2]), (0, 1, 2, 0))}) == \
        "its model was merged from models trained with seeds [0, 1], the config asks for [0, 1, 2]"
    assert stale_reason(recorded(made), {**wanted, "training": merging.merged_training(sources([0, 1]), (1, 0, 1, 0))}) == \
        "its model was merged otherwise: assignment [0, 1, 1, 0], the config asks for [1, 0, 1, 0]"
    ensemble = merging.ensemble_training(sources([0, 1]))
    assert stale_reason(recorded(ensemble), {**wanted, "training": merging.ensemble_training(sources([0, 1], 40))}) == \
        "its model was an ensemble of models trained with steps 30, the config asks for 40"
