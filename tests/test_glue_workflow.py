"""The encoder half in the workflow: the real MiniLM-L6 fine-tuned on a generated GLUE-style task
under a few plans, end to end (scores, summary, figures, report), and what re-runs after."""

import re
import shutil

import polars as pl
import pytest

from workflow_helpers import ENCODER_RUN, REDUCED, changed, planned_jobs, planned_scores, score_mtimes, snakemake, write_config

pytestmark = pytest.mark.slow

PLANS = {"baseline", "skip-N0", "skip-N1"}


@pytest.fixture(scope="module")
def encoder_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("encoder")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(write_config(workdir, ENCODER_RUN)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir


def dry(workdir, config):
    result = snakemake(workdir, "-n", "--configfile", str(write_config(workdir, config, "dry.yaml")))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_the_encoder_is_fine_tuned_per_plan_and_reported(encoder_run):
    results = encoder_run / "results"
    files = {p.relative_to(results / "scores/minilm") for p in score_mtimes(encoder_run)}
    assert {str(f) for f in files} == {f"{plan}/demo_sentiment.seed0.parquet" for plan in PLANS}
    summary = pl.read_parquet(results / "summary.parquet")
    scores = summary.filter(pl.col("benchmark") == "demo_sentiment")
    assert set(scores["plan"]) == PLANS and scores["train_seed"].to_list() == [0] * 3
    assert scores.filter(pl.col("plan") == "baseline")["normalized"].to_list() == pytest.approx([1.0])
    chance = scores["random_baseline"].unique().to_list()
    assert len(chance) == 1 and 0.4 < chance[0] < 0.6  # the majority share of the balanced task's 40 rows
    for figure in ("fig04_skip", "fig11_all_variants"):
        assert (results / f"figures/minilm/{figure}.png").is_file()
    # two jobs of at most two plans (glue.plans_per_job), each with its log
    logs = sorted((results / "logs/finetune/minilm/demo_sentiment.seed0").glob("*.log"))
    assert len(logs) == 2 and all("acc" in log.read_text() for log in logs)
    report = (encoder_run / "reports/report.html").read_text()
    assert "fig04_skip" in report and "minilm" in report


def test_nothing_changed_means_nothing_to_do(encoder_run):
    assert planned_jobs(dry(encoder_run, ENCODER_RUN)) == {}


def test_a_new_seed_plans_only_its_fine_tuning_runs(encoder_run):
    result = dry(encoder_run, changed(lambda c: c["glue"].update(seeds=[0, 1]), ENCODER_RUN))
    assert planned_scores(result) == {f"results/scores/minilm/{plan}/demo_sentiment.seed1.parquet" for plan in PLANS}
    assert planned_jobs(result)["finetune"] == 2


def test_a_changed_training_setting_recomputes_every_fine_tuned_score_and_says_why(encoder_run, tmp_path):
    workdir = shutil.copytree(encoder_run, tmp_path / "run", symlinks=True)
    result = dry(workdir, changed(lambda c: c["glue"].update(learning_rate=1.0e-4), ENCODER_RUN))
    output = result.stdout + result.stderr
    assert planned_scores(result) == {f"results/scores/minilm/{plan}/demo_sentiment.seed0.parquet" for plan in PLANS}
    assert re.search(r"3 finished score\(s\) will be recomputed: 3 x its model was trained with learning_rate 0\.0003, "
                     r"the config asks for 0\.0001", output), output[-2000:]


def test_a_decoder_and_an_encoder_are_drawn_side_by_side(tmp_path):
    def add_encoder(config):
        config["models"]["minilm"] = ENCODER_RUN["models"]["minilm"]
        config["glue"] = ENCODER_RUN["glue"]
        for grid in config["sweeps"]:
            grid["models"] = ["demo"]
        config["sweeps"].append({"variants": ["skip"], "N": [0], "models": ["minilm"]})

    jobs = planned_jobs(dry(tmp_path, changed(add_encoder, REDUCED)))
    assert jobs["figure_decoder_encoder"] == 1 and jobs["demo_glue"] == 1
    assert jobs["finetune"] == 1 and jobs["evaluate"] >= 2
