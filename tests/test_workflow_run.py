"""The workflow end to end on a reduced demo, and what re-runs when the config changes."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from workflow_helpers import (
    REDUCED,
    REPO,
    changed,
    offline_environment,
    planned_jobs,
    planned_scores,
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
        config["evaluation"]["passes_per_job"] = 5
        config["include_paths"].append("results/demo/data")  # where tasks come from

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
    result = snakemake(finished_run, "-n", "--configfile", str(write_config(finished_run, changed(update), "dry.yaml")))
    jobs = planned_jobs(result)
    scores_planned = planned_scores(result)
    assert len(scores_planned) == new_scores, (what, scores_planned)
    assert not {str(p.relative_to(finished_run)) for p in scores(finished_run)} & scores_planned
    # grouped into jobs of one benchmark each, within the job size (passes_per_job: 2)
    benchmarks_planned = {Path(p).stem for p in scores_planned}
    assert len(benchmarks_planned) <= jobs.pop("evaluate") <= new_scores
    assert jobs.pop("aggregate") == 1
    if what == "a benchmark":
        assert jobs.pop("check_benchmarks") == 1  # checked once, before its evaluation jobs
    assert not {"demo_data", "demo_model", "similarity"} & set(jobs)
    assert jobs.pop("cost_table") == 1  # the cost table follows the summary
    assert all(rule.startswith("figure_") or rule == "all" for rule in jobs), jobs


def test_a_deleted_score_is_made_again_and_the_summary_follows(finished_run, tmp_path):
    workdir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    deleted = workdir / "results/scores/demo/skip-N0/demo_cloze.parquet"
    deleted.unlink()
    result = snakemake(workdir, "-n", "--configfile", str(write_config(workdir, REDUCED, "dry.yaml")))
    assert planned_scores(result) == {str(deleted.relative_to(workdir))}
    assert planned_jobs(result)["aggregate"] == 1


def test_an_unknown_benchmark_stops_the_run_before_any_evaluation(finished_run, tmp_path):
    workdir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    before = scores(workdir)
    config = changed(lambda c: (c["benchmarks"].append("demo_chioce"), c["sweeps"][0].update(seeds=[0, 5])))
    result = snakemake(workdir, "--cores", "2", "--configfile", str(write_config(workdir, config, "typo.yaml")))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert output.count("unknown benchmark 'demo_chioce'; did you mean: demo_choice") >= 1, output[-3000:]
    assert "Error in rule check_benchmarks" in output and "Error in rule evaluate" not in output
    assert scores(workdir) == before  # no evaluation ran (random-N0-S5 was due on demo_choice)


def test_a_plot_only_setting_redraws_only_the_figures(finished_run):
    jobs = dry_run(finished_run, changed(lambda c: c["figures"].update(dpi=61)))
    assert jobs.pop("all") == 1
    assert jobs and all(rule.startswith("figure_") for rule in jobs), jobs


def test_few_shot_scores_made_before_seeding_or_with_another_seed_rerun_and_only_they(finished_run, tmp_path):
    # a copy, so that the other tests keep theirs
    workdir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    fewshot = changed(with_fewshot_task)
    configfile = write_config(workdir, fewshot, "fewshot.yaml")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # scores as painters wrote them before few-shot seeding: no fewshot_seed (nor the other new columns)
    before = scores(workdir)
    for path, mtime in before.items():
        frame = pl.read_parquet(path)
        frame.drop("fewshot_seed", "prompt_hash", "generation_kwargs", "settings", "batch_size", "batch_size_used",
                   "bootstrap_iters").write_parquet(path)
        os.utime(path, ns=(mtime, mtime))
    few_shot = {p for p in before if p.name == "demo_choice_2shot.parquet"}
    assert len(few_shot) == 4 < len(before)
    dry = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert planned_scores(dry) == {str(p.relative_to(workdir)) for p in few_shot}
    assert "4 finished score(s) will be recomputed: 4 x few-shot score made before few-shot seeding" in dry.stdout + dry.stderr
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = scores(workdir)
    assert {p for p in before if after[p] != before[p]} == few_shot  # 0-shot scores kept as they were
    assert all(set(pl.read_parquet(p)["fewshot_seed"]) == {1234} for p in few_shot)
    assert dry_run(workdir, fewshot) == {}
    # another few-shot seed: exactly the few-shot scores again
    reseeded = snakemake(workdir, "-n", "--configfile",
                         str(write_config(workdir, changed(lambda c: c["evaluation"].update(fewshot_seed=7), fewshot), "seed7.yaml")))
    assert planned_scores(reseeded) == {str(p.relative_to(workdir)) for p in few_shot}
    # a changed limit: every score again, each with its reason
    relimited = snakemake(workdir, "-n", "--configfile", str(write_config(workdir, changed(lambda c: c.update(limit=6), fewshot), "limit.yaml")))
    assert len(planned_scores(relimited)) == len(before)
    assert f"{len(before)} x made with limit 8, the config asks for 6" in relimited.stdout + relimited.stderr


def run_until_new_scores(workdir, configfile, count, before):
    """Start the workflow and return it once `count` new score files exist (or it ended)."""
    command = snakemake_command(workdir, "--cores", "2", "--configfile", str(configfile))
    with open(Path(workdir) / "run.out", "w") as output:
        run = subprocess.Popen(command, cwd=REPO, env=offline_environment(), stdout=output,
                               stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while len(scores(workdir)) < len(before) + count and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.1)
    return run


def evaluation_processes(workdir):
    """PIDs of the `painters evaluate` processes running in `workdir`."""
    found = subprocess.run(["pgrep", "-f", "painters evaluate --model"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found if os.path.realpath(f"/proc/{pid}/cwd") == os.path.realpath(workdir)]


def signal_all(pids, signum):
    for pid in pids:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def test_a_failed_job_keeps_the_scores_it_finished(finished_run, tmp_path):
    """An evaluation job that dies (out of memory, cancelled, crashed) after some of its scores:
    those stay, and the next run computes only the rest."""
    workdir = shutil.copytree(finished_run, tmp_path / "run", symlinks=True)
    before = scores(workdir)
    seeds = list(range(25))  # 24 new random plans x 2 benchmarks, one job per benchmark
    bigger = changed(lambda c: (c["sweeps"][0].update(seeds=seeds), c["evaluation"].update(passes_per_job=50)))
    configfile = write_config(workdir, bigger, "bigger.yaml")
    command = snakemake_command(workdir, "--cores", "2", "--configfile", str(configfile))
    with open(Path(workdir) / "run.out", "w") as output:
        run = subprocess.Popen(command, cwd=REPO, env=offline_environment(), stdout=output, stderr=subprocess.STDOUT,
                               start_new_session=True)
    # the jobs' own processes die once a first score is out (stopped while we look, so none finishes)
    killed, deadline = [], time.monotonic() + 300
    while not killed and run.poll() is None and time.monotonic() < deadline:
        pids = evaluation_processes(workdir)
        signal_all(pids, signal.SIGSTOP)
        if pids and len(scores(workdir)) > len(before):
            signal_all(pids, signal.SIGKILL)
            killed = pids
        else:
            signal_all(pids, signal.SIGCONT)
            time.sleep(0.02)
    run.wait(timeout=300)
    log = (Path(workdir) / "run.out").read_text()
    done_at_failure = {p: t for p, t in scores(workdir).items() if p not in before}
    new_scores = 2 * (len(seeds) - 1)
    assert killed and run.returncode != 0, log[-3000:]
    assert 1 <= len(done_at_failure) < new_scores, log[-3000:]
    remaining = dry_run_result(workdir, bigger)
    assert len(planned_scores(remaining)) == new_scores - len(done_at_failure)
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = scores(workdir)
    assert {p: final[p] for p in [*before, *done_at_failure]} == {**before, **done_at_failure}
    assert len(final) == len(before) + new_scores


def dry_run_result(workdir, config):
    result = snakemake(workdir, "-n", "--configfile", str(write_config(workdir, config, "dry.yaml")))
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_a_killed_run_resumes_and_keeps_what_finished(finished_run):
    workdir = finished_run
    before = scores(workdir)
    bigger = changed(lambda c: c["sweeps"][0].update(N=[0, 1], seeds=[0, 1, 2]))
    configfile = write_config(workdir, bigger, "bigger.yaml")
    run = run_until_new_scores(workdir, configfile, 4, before)
    os.killpg(run.pid, signal.SIGKILL)  # the whole job tree, as a lost login node would
    run.wait()
    done_at_kill = {p: t for p, t in scores(workdir).items() if p not in before}
    assert len(done_at_kill) >= 4
    # a SIGKILLed Snakemake leaves its lock; --unlock is the documented first step of a resume
    assert snakemake(workdir, "--unlock", "--configfile", str(configfile)).returncode == 0
    # 6 new plans (skip-N1, random-N{0,1}-S{0,1,2} but the existing random-N0-S0) x 2 benchmarks
    new_scores = 12
    # a finished score is never planned again, even one whose job was killed
    remaining = planned_scores(dry_run_result(workdir, bigger))
    assert len(remaining) == new_scores - len(done_at_kill)
    result = snakemake(workdir, "--cores", "2", "--configfile", str(configfile))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    final = scores(workdir)
    assert len(final) == len(before) + new_scores
    # what had finished before is kept as it was (not recomputed)
    assert {p: final[p] for p in [*before, *done_at_kill]} == {**before, **done_at_kill}
    assert not [p for p in (workdir / "results/scores").rglob("*") if p.is_file() and p.suffix != ".parquet"]
    assert dry_run(workdir, bigger) == {}
