"""The demo LM trained as a LayerShuffle variant (`painters demo-model --variant`), and the workflow's
`demo.variants`, which adds it to the decoder study as a second model."""

import json
from contextlib import nullcontext

import pytest
import torch
from safetensors.torch import load_file

from painters import surgery, sweep, tiny
from painters.demo import data as demo_data
from painters.demo import train as demo_train
from painters.layershuffle.training import batch_plan
from test_demo import run_painters
from workflow_helpers import REDUCED, changed, planned_jobs, planned_scores, snakemake, write_config

SMALL = dict(steps=4, layers=3, hidden=32, heads=2, batch_tokens=256, log=lambda line: None)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return demo_data.generate(tmp_path_factory.mktemp("demo") / "data", n_test=10, n_train=300)


def executed_layers(monkeypatch) -> list[list[int]]:
    """Hooks on the models `tiny.tiny_model` makes: per forward, the indices of the layers it ran, in order."""
    forwards: list[list[int]] = []
    make = tiny.tiny_model

    def hooked(*args, **kwargs):
        model = make(*args, **kwargs)
        model.register_forward_pre_hook(lambda module, inputs: forwards.append([]))
        for index, layer in enumerate(surgery.layer_list(model)):
            layer.register_forward_pre_hook(lambda module, inputs, index=index: forwards[-1].append(index))
        return model

    monkeypatch.setattr(tiny, "tiny_model", hooked)
    return forwards


@pytest.mark.parametrize("variant", ["sequential", "layershuffle", "layerdrop"])
def test_each_batch_runs_the_layers_its_plan_draws(corpus, tmp_path, monkeypatch, variant):
    forwards = executed_layers(monkeypatch)
    result = demo_train.train(corpus, tmp_path / "m", seed=3, variant=variant, **{**SMALL, "steps": 8})
    depth = SMALL["layers"]
    drawn = [surgery.called_layers(batch_plan(variant, depth, 3, step).schedule(depth)) for step in range(8)]
    assert forwards == drawn
    if variant == "sequential":
        assert all(order == [0, 1, 2] for order in forwards)
    else:  # the draws change from batch to batch
        assert len({tuple(order) for order in forwards}) > 1
    recorded = json.loads((result.out / "training.json").read_text())
    assert recorded["settings"]["variant"] == variant and recorded["settings"]["seed"] == 3


def test_the_default_is_sequential_and_trains_as_without_surgery(corpus, tmp_path, monkeypatch):
    default = demo_train.train(corpus, tmp_path / "default", seed=1, **SMALL)
    monkeypatch.setattr(demo_train.surgery, "apply", lambda model, plan: nullcontext(model))
    plain = demo_train.train(corpus, tmp_path / "plain", seed=1, **SMALL)
    shuffled = demo_train.train(corpus, tmp_path / "shuffled", seed=1, variant="layershuffle", **SMALL)
    weights = [load_file(m.out / "model.safetensors") for m in (default, plain, shuffled)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    # under the nullcontext the layershuffle plans are not applied either: the same weights
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])
    assert json.loads((default.out / "training.json").read_text())["settings"]["variant"] == "sequential"


def test_a_layershuffle_model_differs_from_the_sequential_one(corpus, tmp_path):
    sequential = demo_train.train(corpus, tmp_path / "s", seed=1, **SMALL)
    shuffled = demo_train.train(corpus, tmp_path / "l", seed=1, variant="layershuffle", **SMALL)
    one, two = (load_file(m.out / "model.safetensors") for m in (sequential, shuffled))
    assert not all(torch.equal(one[k], two[k]) for k in one)


@pytest.mark.parametrize("variant", ["layershuffle_position", "shuffled"])
def test_a_variant_the_lm_lacks_is_refused_with_exit_status_2(tmp_path, variant):
    result = run_painters("demo-model", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "m"),
                          "--variant", variant, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert f"--variant {variant}" in result.stderr and "sequential, layershuffle, layerdrop" in result.stderr
    assert not (tmp_path / "m").exists()


# ---- the workflow


def with_layershuffle(config):
    config["demo"]["variants"] = ["sequential", "layershuffle"]


def test_demo_variants_add_a_model_beside_the_demo_model_in_its_sweeps():
    config = sweep.with_results_paths(changed(with_layershuffle))
    config["sweeps"].append({"name": "other", "models": ["elsewhere"], "variants": ["skip"], "N": [0]})
    sweep.with_demo_variants(config)
    added = config["models"]["demo-layershuffle"]
    assert added == {**config["models"]["demo"], "path": "results/demo/model-layershuffle"}
    assert sweep.demo_model_paths(config) == {"results/demo/model": "sequential",
                                              "results/demo/model-layershuffle": "layershuffle"}
    assert sweep.model_depth(config, "demo-layershuffle") == 4
    assert sweep.configured_model_kind(config, "demo-layershuffle") == "decoder"
    # REDUCED's sweeps name no models (so every model); a sweep naming another model does not get it
    assert [grid.get("models") for grid in config["sweeps"]] == [None, None, ["elsewhere"]]
    named = changed(lambda c: (with_layershuffle(c), c["sweeps"][0].update(models=["demo"])))
    assert sweep.with_demo_variants(named)["sweeps"][0]["models"] == ["demo", "demo-layershuffle"]


def test_demo_variants_without_sequential_or_with_a_clashing_name_are_refused():
    with pytest.raises(ValueError, match="must include sequential"):
        sweep.with_demo_variants(changed(lambda c: c["demo"].update(variants=["layershuffle"])))
    clash = changed(lambda c: (with_layershuffle(c), c["models"].update({"demo-layershuffle": {"path": "elsewhere"}})))
    with pytest.raises(ValueError, match="models.demo-layershuffle: the name of the demo model demo trained as layershuffle"):
        sweep.with_demo_variants(clash)


def test_the_dry_run_trains_the_layershuffle_demo_model_and_scores_it_as_the_demo_model(tmp_path):
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(write_config(tmp_path, changed(with_layershuffle))))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert planned_jobs(result)["demo_model"] == 2
    assert "--out results/demo/model-layershuffle --seed 0 --layers 4 --variant layershuffle --steps 20" in result.stdout
    scores = planned_scores(result)
    demo = {s.removeprefix("results/scores/demo/") for s in scores if s.startswith("results/scores/demo/")}
    shuffled = {s.removeprefix("results/scores/demo-layershuffle/") for s in scores
                if s.startswith("results/scores/demo-layershuffle/")}
    assert demo and shuffled == demo
    assert "results/similarity/demo-layershuffle.parquet" in result.stdout

    plain = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, REDUCED, "plain.yaml")))
    assert plain.returncode == 0 and planned_jobs(plain)["demo_model"] == 1
    assert not [s for s in planned_scores(plain) if "demo-layershuffle" in s]
