"""The workflow end to end on a reduced demo, and what re-runs when the config changes."""

import os
import shutil
import signal
import subprocess
import time

import polars as pl
import pytest

from workflow_helpers import (
    REDUCED,
    REPO,
    changed,
    offline_environment,
    planned_jobs,
    score_mtimes as scores,
    snakemake,
    snakemake_command,
    with_fewshot_task,
    write_config,
)

pytestmark = pytest.mark.slow


def dry_run(workdir, config):
    result = snakemake(workdir, "-n", "--configfile", str(write_config(workdir, config, "dry.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    return planned_jobs(result)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The reduced demo, run once to the end (with the report)."""
    workdir = tmp_path_factory.mktemp("run")
    os.environ["PAINTERS_WORKER_DIR"] = str(workdir / "workers")
    started = time.perf_counter()
    result = snakemake(workdir, "--cores", "2", "--configfile", str(write_config(workdir, REDUCED)))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"reduced demo: {time.perf_counter() - started:.0f} s")
    return workdir


def test_the_run_writes_scores_summary_figures_and_the_report(finished_run):
    results = finished_run / "results"
    plans = {p.parent.name for p in scores(finished_run)}
    assert plans == {"baseline", "skip-N0", "random-N0-S0", "looped_parallel-N0-K2"}
    summary = pl.read_parquet(results / "summary.parquet")
    assert set(summary["benchmark"]) == {"demo_choice", "demo_cloze", "median"}
    assert (results / "summary.csv").read_text().startswith("model,")
    figures = {p.name for p in (results / "figures/demo").iterdir()}
    for figure in ("fig03_similarity", "fig04_skip", "fig07_random", "fig09_looped_parallel", "fig11_all_variants"):
        assert {f"{figure}.png", f"{figure}.svg"} <= figures
    report = (finished_run / "reports/report.html").read_text()
    assert "fig04_skip" in report and "demo" in report


def test_nothing_changed_means_nothing_to_do(finished_run):
    assert dry_run(finished_run, REDUCED) == {}


def test_settings_that_do_not_change_scores_rerun_nothing(finished_run):
    def update(config):
        config["models"]["demo"]["batch_size"] = 7
        config["evaluation"]["worker"] = False

    assert dry_run(finished_run, changed(update)) == {}


@pytest.mark.parametrize(
    ("what", "update", "new_scores"),
    [
        ("an N value", lambda c: c["sweeps"][0].update(N=[0, 1]), 4),  # skip-N1, random-N1-S0 x 2 benchmarks
        ("a seed", lambda c: c["sweeps"][0].update(seeds=[0, 1]), 2),  # random-N0-S1 x 2
        ("a K", lambda c: c["sweeps"][1].update(K=[2, 3]), 2),  # looped_parallel-N0-K3 x 2
        ("a benchmark", lambda c: c["benchmarks"].append("demo_pair"), 4),  # every plan on demo_pair
    ],
)
def test_adding_a_setting_plans_only_the_new_scores(finished_run, what, update, new_scores):
    jobs = dry_run(finished_run, changed(update))
    assert jobs.pop("evaluate_demo") == new_scores, what
    assert jobs.pop("aggregate") == 1
    assert not {"demo_data", "demo_model", "similarity"} & set(jobs)
    assert all(rule.startswith("figure_") or rule == "all" for rule in jobs), jobs


def test_a_plot_only_setting_redraws_only_the_figures(finished_run):
    jobs = dry_run(finished_run, changed(lambda c: c["figures"].update(dpi=61)))
    assert jobs.pop("all") == 1
    assert jobs and all(rule.startswith("figure_") for rule in jobs), jobs


def test_few_shot_scores_made_before_seeding_or_with_another_seed_rerun_and_only_they(finished_run, tmp_path):
    # a copy, so that the other tests keep theirs (less the live worker sockets)
    workdir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True, ignore=shutil.ignore_patterns("workers"))
    fewshot = changed(with_fewshot_task)
    configfile = write_config(workdir, fewshot, "fewshot.yaml")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # scores as painters wrote them before few-shot seeding: no fewshot_seed (nor the other new columns)
    before = scores(workdir)
    for path, mtime in before.items():
        frame = pl.read_parquet(path)
        frame.drop("fewshot_seed", "prompt_hash", "generation_kwargs", "batch_size", "bootstrap_iters").write_parquet(path)
        os.utime(path, ns=(mtime, mtime))
    few_shot = {p for p in before if p.name == "demo_choice_2shot.parquet"}
    assert len(few_shot) == 4 < len(before)
    dry = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert planned_jobs(dry)["evaluate_demo"] == 4
    assert "4 finished score(s) will be recomputed: 4 x few-shot score made before few-shot seeding" in dry.stdout + dry.stderr
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = scores(workdir)
    assert {p for p in before if after[p] != before[p]} == few_shot  # 0-shot scores kept as they were
    assert all(set(pl.read_parquet(p)["fewshot_seed"]) == {1234} for p in few_shot)
    assert dry_run(workdir, fewshot) == {}
    # another few-shot seed: exactly the few-shot scores again
    reseeded = dry_run(workdir, changed(lambda c: c["evaluation"].update(fewshot_seed=7), fewshot))
    assert reseeded["evaluate_demo"] == 4


def test_a_killed_run_resumes_and_keeps_what_finished(finished_run):
    workdir = finished_run
    before = scores(workdir)
    bigger = changed(lambda c: c["sweeps"][0].update(N=[0, 1], seeds=[0, 1, 2]))
    configfile = write_config(workdir, bigger, "bigger.yaml")
    command = snakemake_command(workdir, "--cores", "2", "--configfile", str(configfile))
    run = subprocess.Popen(command, cwd=REPO, env=offline_environment(), stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(scores(workdir)) < len(before) + 4 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    os.killpg(run.pid, signal.SIGKILL)  # the whole job tree, as a lost login node would
    run.wait()
    done_at_kill = {p: t for p, t in scores(workdir).items() if p not in before}
    assert len(done_at_kill) >= 4
    # a SIGKILLed Snakemake leaves its lock; --unlock is the documented first step of a resume
    assert snakemake(workdir, "--unlock", "--configfile", str(configfile)).returncode == 0
    # 6 new plans (skip-N1, random-N{0,1}-S{0,1,2} but the existing random-N0-S0) x 2 benchmarks
    new_scores = 12
    remaining = dry_run(workdir, bigger).get("evaluate_demo", 0)
    # Finished jobs are not planned again. A job killed after its file appeared but before
    # Snakemake recorded it as done is redone (Snakemake cannot tell): at most the 2 running.
    assert new_scores - len(done_at_kill) <= remaining <= new_scores - len(done_at_kill) + 2
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = scores(workdir)
    assert len(final) == len(before) + new_scores
    # what had finished before is kept as it was (not recomputed)
    assert {p: final[p] for p in before} == before
    kept = [p for p, t in done_at_kill.items() if final[p] == t]
    assert len(kept) == len(done_at_kill) - (remaining - (new_scores - len(done_at_kill)))
    assert not [p for p in (workdir / "results/scores").rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert dry_run(workdir, bigger) == {}
