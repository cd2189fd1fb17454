"""Vision models in the Painters sweeps (painters.vision_sweep, `painters evaluate-images`): an image
classifier scored as it is under every plan in one shared pass, checked against the layers physically
rebuilt; its kind, its score files, its refusals; and LayerShuffle's pretrained start (train-vision --start)."""

import json

import polars as pl
import pytest
import torch

from painters import cli, results, surgery, sweep
from painters.exactness import rebuilt_model
from painters.layershuffle import training, vision
from painters.plan import parse
from painters.shared_pass import SharedPass
from painters.vision_sweep import top_k_accuracies

DEPTH = 6
PLANS = ["baseline", "skip-N1", "middle_repeat-N1", "reverse-N0", "random-N1-S0", "parallel-N1", "looped_parallel-N1-K2",
         "looped_parallel-N1-K3", "skip_layer-L0", "skip_layer-L4", "switch-L2", "shuffle_all-S0", "prune-P20-S1"]


@pytest.fixture(scope="module")
def digits():
    return vision.load_digits(0)


@pytest.fixture(scope="module")
def trained_vit(digits):
    """A tiny ViT trained a little on the digits, so that plans change its answers."""
    model = vision.tiny_vit(digits, layers=DEPTH, hidden=32, heads=4, seed=0)
    training.train(model, digits.train, training.TrainSettings(steps=200, batch_size=64, learning_rate=2e-3, warmup_steps=20), log=lambda _: None)
    return model.eval()


def test_an_image_classifier_is_a_vision_model_and_a_text_model_is_not():
    assert sweep.model_kind({"model_type": "vit", "architectures": ["ViTForImageClassification"]}) == "vision"
    assert sweep.model_kind({"model_type": "deit", "architectures": ["DeiTForImageClassificationWithTeacher"]}) == "vision"
    assert sweep.model_kind({"model_type": "beit"}) == "vision"  # no architectures: its family classifies images
    assert sweep.model_kind({"model_type": "bert", "architectures": ["BertModel"]}) == "encoder"
    assert sweep.model_kind({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}) == "decoder"
    assert sweep.model_kind({"model_type": "vit", "architectures": ["ViTMAEForPreTraining"]}) == "decoder"  # not a classifier


def test_the_shared_pass_gives_each_plan_the_logits_of_its_layers_physically_rebuilt(trained_vit, digits):
    images = digits.test.images(range(64))
    plans = [parse(key) for key in PLANS]
    shared = dict(SharedPass(trained_vit, plans).walk(lambda: trained_vit(pixel_values=images).logits))
    assert sorted(shared) == list(range(len(plans)))
    with torch.no_grad():
        for index, plan in enumerate(plans):
            with surgery.apply(trained_vit, plan):
                alone = trained_vit(pixel_values=images).logits
            assert torch.equal(shared[index], alone), plan.key  # bit for bit: the same computation, each prefix once
            # the model rebuilt with the plan's calls physically in its stack (a parallel step: their average)
            reference = rebuilt_model(trained_vit, plan)(pixel_values=images).logits
            torch.testing.assert_close(shared[index], reference, rtol=0, atol=1e-5)
    # the plans change the answers: the test would notice a walk that gave every plan the baseline's
    assert not torch.equal(shared[PLANS.index("reverse-N0")], shared[0])


def test_top_1_and_top_5_accuracy_count_what_the_rebuilt_model_gets_right(trained_vit, digits):
    plans = [parse(key) for key in ("baseline", "skip_layer-L4", "switch-L2")]
    scores = top_k_accuracies(trained_vit, plans, digits.test, batch_size=100)
    with torch.no_grad():
        for plan, score in zip(plans, scores):
            logits = rebuilt_model(trained_vit, plan)(pixel_values=digits.test.pixels).logits
            top5 = logits.topk(5, dim=-1).indices
            assert score["acc"] == pytest.approx(float((top5[:, 0] == digits.test.labels).float().mean()))
            assert score["acc_top5"] == pytest.approx(float((top5 == digits.test.labels[:, None]).any(-1).float().mean()))
            assert score["acc"] <= score["acc_top5"]
    assert scores[0]["acc"] > 0.3  # trained: well above chance (0.1)


def run(*args) -> int:
    return cli.main(list(map(str, args)))


@pytest.fixture(scope="module")
def vit_folder(trained_vit, tmp_path_factory):
    folder = tmp_path_factory.mktemp("vit") / "model"
    trained_vit.save_pretrained(folder)
    return folder


def test_evaluate_images_writes_a_score_file_per_plan_with_chance_at_one_over_the_classes(vit_folder, trained_vit, digits, tmp_path):
    out = tmp_path / "results"
    assert run("evaluate-images", "--model", vit_folder, "--name", "vit", "--benchmark", "digits", "--plans", *PLANS[:4],
               "--out", out, "--batch-size", 128, "--threads", 1) == 0
    expected = top_k_accuracies(trained_vit, [parse(key) for key in PLANS[:4]], digits.test)
    for key, accuracies in zip(PLANS[:4], expected):
        frame = results.read_score_file(results.score_path(out, "vit", key, "digits"))
        values = dict(zip(frame["metric"], frame["value"]))
        chance = dict(zip(frame["metric"], frame["random_baseline"]))
        assert values == pytest.approx(accuracies) and chance == {"acc": 0.1, "acc_top5": 0.5}
        assert set(frame["plan"]) == {key} and set(frame["num_layers"]) == {DEPTH} and set(frame["n_samples"]) == {len(digits.test)}
    # a limited run records its limit (a later run without it finds the score stale)
    assert run("evaluate-images", "--model", vit_folder, "--name", "few", "--benchmark", "digits", "--plans", "baseline",
               "--out", out, "--limit", 50) == 0
    frame = results.read_score_file(results.score_path(out, "few", "baseline", "digits"))
    assert set(frame["n_samples"]) == {50} and set(frame["limit"]) == {50.0}


def test_a_head_for_other_classes_is_refused_before_anything_is_written(digits, tmp_path, capsys):
    other = vision.tiny_vit(vision.ImageData("seven", None, digits.test, 7), layers=2, hidden=16, heads=2)
    other.save_pretrained(tmp_path / "seven")
    assert run("evaluate-images", "--model", tmp_path / "seven", "--name", "seven", "--benchmark", "digits",
               "--plans", "baseline", "--out", tmp_path / "results") == 2
    error = capsys.readouterr().err
    assert "head has 7 classes and digits has 10" in error
    assert not (tmp_path / "results").exists()


def test_bad_benchmarks_and_models_get_one_clear_error(vit_folder, tmp_path, capsys):
    assert run("evaluate-images", "--model", vit_folder, "--name", "vit", "--benchmark", "mnist", "--plans", "baseline",
               "--out", tmp_path) == 2
    assert "--benchmark 'mnist': not an image benchmark; valid: digits, imagenet-1k, cifar100, imagefolder" in capsys.readouterr().err
    # imagenet-1k is read through the model's image processor: the tiny ViT has none
    assert run("evaluate-images", "--model", vit_folder, "--name", "vit", "--benchmark", "imagenet-1k", "--plans", "baseline",
               "--out", tmp_path) == 2
    assert "image processor" in capsys.readouterr().err
    assert run("evaluate-images", "--model", vit_folder, "--name", "vit", "--benchmark", "digits", "--plans", "skip-N9",
               "--out", tmp_path) == 2
    assert "N" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.parquet"))


def train_vision(out, *extra) -> int:
    return run("train-vision", "--layers", 4, "--hidden", 16, "--steps", 20, "--batch-size", 32, "--checkpoint-every", 10,
               "--threads", 1, "--out", out, *extra)


def test_a_fine_tuned_model_starts_from_the_pretrained_one_and_records_it(tmp_path):
    assert train_vision(tmp_path / "pre") == 0
    pretrained = json.loads((tmp_path / "pre/training.json").read_text())
    # a learning rate too small to move anything: the fine-tuned model is still the pretrained one
    assert train_vision(tmp_path / "still", "--start", tmp_path / "pre", "--variant", "layershuffle", "--learning-rate", 1e-30) == 0
    assert train_vision(tmp_path / "scratch", "--variant", "layershuffle", "--learning-rate", 1e-30) == 0

    def weights(name):
        from transformers import AutoModelForImageClassification

        return AutoModelForImageClassification.from_pretrained(tmp_path / name / "model").state_dict()

    start, still, scratch = weights("pre"), weights("still"), weights("scratch")
    assert all(torch.allclose(start[key], still[key], atol=1e-6) for key in start)
    assert not all(torch.allclose(start[key], scratch[key], atol=1e-6) for key in start)
    facts = json.loads((tmp_path / "still/training.json").read_text())
    assert facts["trained_from"]["pretrained"] == pretrained["settings"]
    assert "pretrained" not in pretrained["trained_from"]  # the pretraining itself starts from the base model


def test_a_start_trained_on_other_data_is_refused(tmp_path, capsys):
    assert train_vision(tmp_path / "pre", "--steps", 10) == 0
    assert train_vision(tmp_path / "other", "--start", tmp_path / "pre", "--data-seed", 1) == 2
    assert "data_seed 0 (this run: 1)" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert train_vision(tmp_path / "nothing", "--start", tmp_path / "missing") == 2
    assert "not a trained model folder" in capsys.readouterr().err


def test_a_trained_model_on_another_digits_split_is_refused(tmp_path, capsys):
    assert train_vision(tmp_path / "pre", "--steps", 10) == 0
    assert run("evaluate-images", "--model", tmp_path / "pre/model", "--name", "pre", "--benchmark", "digits",
               "--plans", "baseline", "--data-seed", 1, "--out", tmp_path / "results") == 2
    assert "trained on the digits split of data seed 0" in capsys.readouterr().err
    assert run("evaluate-images", "--model", tmp_path / "pre/model", "--name", "pre", "--benchmark", "digits",
               "--plans", "baseline", "--out", tmp_path / "results") == 0
    settings = json.loads(pl.read_parquet(results.score_path(tmp_path / "results", "pre", "baseline", "digits"))["settings"][0])
    assert settings["training"]["steps"] == 10  # how the model was trained: a retrained one makes the score stale


# ---- the workflow's plan of vision models (painters.workflow_plan)


def vision_config(results, vit_folder, **changes):
    from test_workflow_plan import validated

    config = {
        "models": {"vit": {"path": str(vit_folder), "resources": {"gpu": 0, "runtime": 20}}},
        "vision": {"benchmarks": ["digits"]},
        "sweeps": [{"variants": ["skip", "skip_layer"], "N": "all"}],
    }
    config.update(changes)
    return validated(config, results)


def test_a_vision_model_is_planned_as_one_job_per_benchmark_with_every_plan(vit_folder, tmp_path):
    from painters.workflow_plan import plan_workflow

    results = tmp_path / "results"
    plan = plan_workflow(vision_config(results, vit_folder))
    assert plan.kinds == {"vit": "vision"} and plan.depths == {"vit": DEPTH}
    assert plan.batches == () and plan.glue_batches == ()
    [batch] = plan.vision_batches
    keys = {"baseline", "skip-N0", "skip-N1", "skip-N2", *(f"skip_layer-L{i}" for i in range(DEPTH))}
    assert batch.benchmark == "digits" and set(batch.plans) == keys and batch.inputs == {}
    assert batch.scores == tuple(f"{results}/scores/vit/{key}/digits.parquet" for key in batch.plans)
    assert batch.resources.runtime == 20 and batch.resources.gpu == 0
    assert plan.figures["vit"] == ["fig02_skip_switch", "fig04_skip", "fig11_all_variants"]  # no Fig 3: it compares texts' hidden states
    # a finished score made with another limit is stale; one made as asked is not
    config = vision_config(results, vit_folder, vision={"benchmarks": ["digits"], "limit": 100})
    assert run("evaluate-images", "--model", vit_folder, "--name", "vit", "--benchmark", "digits", "--plans", "baseline", "skip-N0",
               "--out", results, "--limit", 100) == 0
    assert run("evaluate-images", "--model", vit_folder, "--name", "vit", "--benchmark", "digits", "--plans", "skip-N1",
               "--out", results) == 0
    again = plan_workflow(config)
    assert {key: stale.reason for key, stale in again.stale.items()} == {
        f"{results}/scores/vit/skip-N1/digits.parquet": "made with limit none, the config asks for 100"}
    assert len(again.vision_batches[0].plans) == len(keys) - 2


@pytest.mark.parametrize(("changes", "message"), [
    ({"vision": {"benchmarks": ["imagefolder"]}}, "vision.data_dir None: no such folder (benchmark imagefolder reads"),
    ({"sweeps": [{"variants": ["skip"], "models": ["vit"], "benchmarks": ["rte"]}]},
     "model vit is a vision model and needs image benchmarks (vision.benchmarks); the grid gives rte"),
    ({"sweeps": [{"variants": ["skip"], "benchmarks": ["mnist"]}]},
     "['mnist'] are neither in benchmarks (valid: none) nor GLUE tasks"),
    ({"layershuffle": {"enabled": True, "base_models": {"vit": {"model": "tiny"}}, "variants": ["sequential"], "umap": {"seeds": []}}},
     "models.vit: a LayerShuffle base model has that name (its figures go under it)"),
])
def test_vision_config_errors_name_the_key_and_what_is_valid(vit_folder, tmp_path, changes, message):
    from painters.workflow_plan import plan_workflow

    with pytest.raises(ValueError) as error:
        plan_workflow(vision_config(tmp_path / "results", vit_folder, **changes))
    assert message in str(error.value)


def test_the_pretrained_base_model_is_swept_only_where_the_workflow_pretrains_it(tmp_path):
    from painters.workflow_plan import plan_workflow

    results = tmp_path / "results"
    layershuffle = {"enabled": True, "base_models": {"tiny-vit": {"model": "tiny", "layers": 4, "pretrain_steps": 50}},
                    "variants": ["sequential"], "umap": {"seeds": []}}
    models = {"pre": {"path": f"{results}/layershuffle/pretrained/tiny-vit/model", "resources": {"gpu": 0}}}
    plan = plan_workflow(vision_config(results, "unused", models=models, layershuffle=layershuffle))
    assert plan.kinds == {"pre": "vision"} and plan.depths == {"pre": 4}  # before it exists: the base model's
    assert plan.vision_batches[0].inputs == {"pretrained": f"{results}/layershuffle/pretrained/tiny-vit"}
    assert plan.trainings["tiny-vit.sequential.s0"].start == f"{results}/layershuffle/pretrained/tiny-vit"
    with pytest.raises(ValueError, match="digits split of layershuffle.data_seed 0"):
        plan_workflow(vision_config(results, "unused", models=models, layershuffle=layershuffle,
                                    vision={"benchmarks": ["digits"], "data_seed": 2}))
    for off in ({**layershuffle, "enabled": False}, {**layershuffle, "base_models": {"tiny-vit": {"model": "tiny"}}}):
        with pytest.raises(ValueError, match="is the pretrained LayerShuffle base model tiny-vit .* nothing makes it"):
            plan_workflow(vision_config(results, "unused", models=models, layershuffle=off))


# ---- image classifier families: the shared pass on each family's own layer stack

FAMILIES = ["vit", "deit", "beit", "data2vec-vision", "dinov2", "vit_msn"]


@pytest.mark.parametrize("model_type", FAMILIES)
def test_the_shared_pass_equals_each_plan_alone_in_every_vision_family(model_type):
    import transformers

    config = transformers.AutoConfig.for_model(
        model_type, hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64, image_size=16,
        patch_size=4, num_channels=3, num_labels=10, architectures=[])  # []: the family's first classifier (DeiT has two)
    torch.manual_seed(0)
    model = transformers.AutoModelForImageClassification.from_config(config).eval()
    assert sweep.model_kind(config.to_dict() | {"architectures": [type(model).__name__]}) == "vision"
    images = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    plans = [parse(key) for key in ("baseline", "skip-N0", "reverse-N0", "parallel-N0", "looped_parallel-N0-K2",
                                    "skip_layer-L0", "switch-L1", "shuffle_all-S0")]
    with torch.no_grad():
        shared = dict(SharedPass(model, plans).walk(lambda: model(pixel_values=images).logits))
        for index, plan in enumerate(plans):
            with surgery.apply(model, plan):
                assert torch.equal(shared[index], model(pixel_values=images).logits), plan.key
    assert not torch.equal(shared[2], shared[0])  # reversing the middle changes the answer


def test_a_hierarchical_backbone_is_refused_by_name(tmp_path, capsys):
    import transformers

    config = transformers.AutoConfig.for_model("swin", embed_dim=16, depths=[2, 2], num_heads=[2, 2], image_size=32, patch_size=4,
                                               window_size=4, num_labels=10, architectures=["SwinForImageClassification"])
    transformers.AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path / "swin")
    assert run("evaluate-images", "--model", tmp_path / "swin", "--name", "swin", "--benchmark", "digits", "--plans", "baseline",
               "--out", tmp_path / "results") == 2
    assert "its stack (swin.encoder.layers) is 2 stages of different shapes" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()
