"""The LayerShuffle study in the workflow: tiny ViTs trained on the digits as two variants, scored
under the evaluation grid, drawn in the report; and what re-runs after."""

import re
import shutil

import polars as pl
import pytest

from workflow_helpers import ENCODER_RUN, changed, planned_jobs, planned_scores, score_mtimes, snakemake, write_config

pytestmark = pytest.mark.slow

STUDY = changed(lambda c: (
    c.update(sweeps=[{"variants": ["baseline"]}]),  # the encoder's baseline only: the point is the vision study
    c.update(layershuffle={
        "enabled": True, "base_models": {"vit": {"model": "tiny", "layers": 4, "hidden": 16}},
        "variants": ["sequential", "layershuffle"], "seeds": [0], "steps": 30, "batch_size": 32, "learning_rate": 1.0e-3,
        "warmup_steps": 5, "checkpoint_every": 10,
        "evaluation": {"order_seeds": [0, 1], "pruned": [1], "prune_seeds": [0]},
        "resources": {"gpu": 0, "mem_mb": 2000, "runtime": 10, "cpus_per_task": 1}}),
), ENCODER_RUN)
PLANS = {"baseline", "shuffle_all-S0", "shuffle_all-S1", "prune-P25-S0", "shuffle_prune-P25-S0"}


@pytest.fixture(scope="module")
def study_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("layershuffle")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(write_config(workdir, STUDY)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def test_each_variant_is_trained_scored_under_the_grid_and_drawn(study_run):
    results = study_run / "results"
    for variant in ("sequential", "layershuffle"):
        trained = results / f"layershuffle/models/vit.{variant}.s0"
        assert (trained / "model/config.json").is_file() and (trained / "training.json").is_file()
        assert not (results / f"layershuffle/models/.vit.{variant}.s0.checkpoint.pt").exists()
        scored = {p.parent.name for p in (results / f"scores/vit.{variant}.s0").rglob("digits.parquet")}
        assert scored == PLANS
    summary = pl.read_parquet(results / "summary.parquet")
    assert set(summary.filter(pl.col("benchmark") == "digits")["model"]) == {"vit.sequential.s0", "vit.layershuffle.s0"}
    for figure in ("layershuffle_order", "layershuffle_pruning"):
        assert (results / f"figures/vit/{figure}.png").is_file()
    assert "layershuffle_order" in (study_run / "reports/report.html").read_text()


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
    assert sum(count for rule, count in jobs.items() if rule.startswith("train_vision_")) == 2
    assert len(planned_scores(result)) == 2 * len(PLANS)
    assert re.search(r"10 finished score\(s\) will be recomputed: 10 x its model was trained with steps 30, "
                     r"the config asks for 40", output), output[-2000:]
    assert not [p for p in score_mtimes(workdir) if "minilm" in str(p) and str(p) in planned_scores(result)]
