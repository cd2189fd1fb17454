"""Merged models rebuilt from known layers, and ensembles (painters.layershuffle.merging)."""

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
        extra, _ = training.train(model, data.train_images, data.train_labels, settings, log=lambda _: None)
        models.append(model)
        modules.append(extra)
    return models, modules


def test_assignments_are_seeded_distinct_and_permutations_when_there_are_enough_models():
    drawn = merging.merge_assignments(n_models=4, depth=4, n_merges=10, seed=0)
    assert drawn == merging.merge_assignments(4, 4, 10, 0) != merging.merge_assignments(4, 4, 10, 1)
    assert len(set(drawn)) == 10 and all(sorted(a) == [0, 1, 2, 3] for a in drawn)
    few = merging.merge_assignments(n_models=2, depth=4, n_merges=5, seed=0)
    assert all(len(a) == 4 and set(a) <= {0, 1} for a in few)


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
    images = data.test_images[:6]
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
        torch.testing.assert_close(training.forward(merged, merged_modules, parse("baseline"), data.test_images[:8])[0],
                                   training.forward(models[0], modules[0], parse("baseline"), data.test_images[:8])[0],
                                   rtol=0, atol=0)
    with pytest.raises(ValueError, match="needs one model index in 0..2 per layer"):
        merging.merge(models, (0, 1, 5, 0), modules)


def test_an_ensemble_averages_its_models_logits(data, trained):
    models, modules = trained
    plan = parse("shuffle_all-S3")
    images = data.test_images[:10]
    with torch.no_grad():
        each = [training.forward(m, x, plan, images)[0] for m, x in zip(models, modules)]
    torch.testing.assert_close(merging.ensemble_logits(models, modules, plan, images), sum(each) / 3)
    accuracy = merging.ensemble_accuracy(models, modules, plan, data.test_images, data.test_labels)
    assert 0 <= accuracy <= 1
