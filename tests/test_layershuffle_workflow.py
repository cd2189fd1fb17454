"""The LayerShuffle study in the workflow: a tiny ViT pretrained on the digits, fine-tuned as two variants,
scored under the evaluation grid, LayerShuffle's merged and ensembled, drawn in the report; the pretrained
ViT swept as a vision model, as it is; and what re-runs after."""

import json
import re
import shutil
from pathlib import Path

import polars as pl
import pytest

from workflow_helpers import ENCODER_RUN, changed, planned_jobs, planned_scores, score_mtimes, snakemake, write_config

pytestmark = pytest.mark.slow

STUDY = changed(lambda c: (
    # the encoder's baseline only: the point is the vision study; the pretrained ViT under a few plans
    c.update(sweeps=[{"variants": ["baseline"]}, {"variants": ["skip", "skip_layer"], "models": ["vit-pretrained"]}]),
    c["models"].update({"vit-pretrained": {"path": "{results}/layershuffle/pretrained/vit/model", "device": "cpu",
                                           "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 10, "cpus_per_task": 1}}}),
    c.update(vision={"benchmarks": ["digits"]}),
    c.update(layershuffle={
        "enabled": True, "base_models": {"vit": {"model": "tiny", "layers": 4, "hidden": 16, "pretrain_steps": 20}},
        "variants": ["sequential", "layershuffle"], "seeds": [0], "steps": 30, "batch_size": 32, "learning_rate": 1.0e-3,
        "warmup_steps": 5, "checkpoint_every": 10,
        "evaluation": {"order_seeds": [0, 1], "pruned": [1], "prune_seeds": [0]},
        "merging": {"variants": ["layershuffle"], "seeds": [0, 1], "merges": 2},
        "umap": {"seeds": [0], "images": 20, "order_seeds": [0, 1]},
        "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 10, "cpus_per_task": 1}}),
), ENCODER_RUN)
PLANS = {"baseline", "shuffle_all-S0", "shuffle_all-S1", "prune-P25-S0", "shuffle_prune-P25-S0"}
TRAINED = ["vit.sequential.s0", "vit.layershuffle.s0", "vit.layershuffle.s1"]  # s1: merged with s0
COMBINED = ["vit.layershuffle.m0", "vit.layershuffle.m1", "vit.layershuffle.ensemble"]
MERGE_PLANS = {"baseline", "shuffle_all-S0", "shuffle_all-S1"}
SWEPT = {"baseline", "skip-N0", "skip-N1", *(f"skip_layer-L{i}" for i in range(4))}  # the pretrained ViT's plans


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("layershuffle")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(write_config(workdir, STUDY)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def test_each_variant_is_trained_scored_under_the_grid_and_drawn(study_run):
    results = study_run / "results"
    for name in TRAINED:
        trained = results / f"layershuffle/models/{name}"
        assert (trained / "model/config.json").is_file() and (trained / "training.json").is_file()
        assert not (results / f"layershuffle/models/.{name}.checkpoint.pt").exists()
        assert {p.parent.name for p in (results / f"scores/{name}").rglob("digits.parquet")} == PLANS
    for name in COMBINED:
        assert {p.parent.name for p in (results / f"scores/{name}").rglob("digits.parquet")} == MERGE_PLANS
    summary = pl.read_parquet(results / "summary.parquet")
    assert set(summary.filter(pl.col("benchmark") == "digits")["model"]) == {*TRAINED, *COMBINED, "vit-pretrained"}
    # every trained model was fine-tuned from the one pretrained, and records it
    pretrained = json.loads((results / "layershuffle/pretrained/vit/training.json").read_text())
    for name in TRAINED:
        facts = json.loads((results / f"layershuffle/models/{name}/training.json").read_text())
        assert facts["trained_from"]["pretrained"] == pretrained["settings"] and pretrained["settings"]["steps"] == 20
    # the pretrained ViT as it is: top-1 and top-5 under each plan, normalized, in its figures
    swept = summary.filter(pl.col("model") == "vit-pretrained")
    assert set(swept["plan"]) == SWEPT and set(swept.filter(pl.col("benchmark") == "digits")["metric"]) == {"acc", "acc_top5"}
    baseline = swept.filter((pl.col("plan") == "baseline") & (pl.col("metric") == "acc"))
    assert baseline["value"][0] == pretrained["test_accuracy_sequential"] and baseline["normalized"][0] == 1.0
    for figure in ("fig02_skip_switch", "fig04_skip", "fig11_all_variants"):
        assert (results / f"figures/vit-pretrained/{figure}.png").is_file()
    for name in ("vit.sequential.s0", "vit.layershuffle.s0"):  # umap.seeds [0]: every variant's model of seed 0
        assert len(pl.read_parquet(results / f"layershuffle/umap/{name}.parquet")) == 20 * 4 * 2  # images x layers x orders
    for figure in ("layershuffle_order", "layershuffle_pruning", "layershuffle_merging", "layershuffle_umap"):
        assert (results / f"figures/vit/{figure}.png").is_file()
    report = (study_run / "reports/report.html").read_text()
    assert "layershuffle_order" in report and "layershuffle_merging" in report


def test_nothing_changed_means_nothing_to_do(study_run):
    result = snakemake(study_run, "-n", "--configfile", str(write_config(study_run, STUDY, "dry.yaml")))
    assert planned_jobs(result) == {}


def test_a_changed_training_setting_retrains_and_rescores_and_says_why(study_run, tmp_path):
    workdir = shutil.copytree(study_run, tmp_path / "run", symlinks=True)
    more = changed(lambda c: c["layershuffle"].update(steps=40), STUDY)
    result = snakemake(workdir, "-n", "--configfile", str(write_config(workdir, more, "more.yaml")))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = planned_jobs(result)
    assert sum(count for rule, count in jobs.items() if rule.startswith("train_vision_")) == 3
    assert "pretrain_vision_vit" not in jobs  # fine-tuning steps: the pretrained model stands
    assert jobs["merge_vision_vit_layershuffle"] == 1
    assert len(planned_scores(result)) == 3 * len(PLANS) + 3 * len(MERGE_PLANS)
    assert re.search(r"24 finished score\(s\) will be recomputed: 15 x its model was trained with steps 30, "
                     r"the config asks for 40; 6 x its model was merged from models trained with steps 30, the config asks for 40; "
                     r"3 x its model was an ensemble of models trained with steps 30, the config asks for 40",
                     output), output[-2000:]
    assert not [p for p in score_mtimes(workdir) if "minilm" in str(p) and str(p) in planned_scores(result)]


def retrained_from_the_start(study_run, base_change, name: str) -> str:
    """A dry run with the base model `vit` changed by `base_change`: the pretraining and all three
    trainings re-run, and every score of theirs and of the swept pretrained model is planned. Its output."""
    config = changed(lambda c: base_change(c["layershuffle"]["base_models"]["vit"]), STUDY)
    result = snakemake(study_run, "-n", "--configfile", str(write_config(study_run, config, name)))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = planned_jobs(result)
    assert jobs["pretrain_vision_vit"] == 1 and sum(n for rule, n in jobs.items() if rule.startswith("train_vision_")) == 3
    assert len(planned_scores(result)) == 3 * len(PLANS) + 3 * len(MERGE_PLANS) + len(SWEPT)
    return output


def test_another_pretraining_retrains_everything_from_it_and_rescores_and_says_why(study_run):
    output = retrained_from_the_start(study_run, lambda base: base.update(pretrain_steps=30), "pretrain.yaml")
    # the trained, merged and ensembled models' scores, and the swept pretrained model's own
    assert re.search(r"31 finished score\(s\) will be recomputed: 24 x its model was trained from pretrained steps 20, "
                     r"the config asks for 30; 7 x its model was trained with steps 20, the config asks for 30",
                     output), output[-2000:]


def test_another_merge_scores_only_that_merge(study_run):
    more = changed(lambda c: c["layershuffle"]["merging"].update(merges=3), STUDY)
    result = snakemake(study_run, "-n", "--configfile", str(write_config(study_run, more, "merges.yaml")))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert planned_jobs(result).get("merge_vision_vit_layershuffle") == 1
    assert {Path(p).parent.parent.name for p in planned_scores(result)} == {"vit.layershuffle.m2"}


def test_another_base_model_retrains_and_rescores_and_says_why(study_run):
    output = retrained_from_the_start(study_run, lambda base: base.update(hidden=24), "wider.yaml")
    assert re.search(r"31 finished score\(s\) will be recomputed: 31 x its model was trained from hidden 16, "
                     r"the config asks for 24", output), output[-2000:]
