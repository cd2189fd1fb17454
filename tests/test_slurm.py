"""The workflow through `snakemake --profile slurm` on a real single-node Slurm cluster.

.ci/slurm_up.sh starts the cluster (Debian's slurmctld, slurmd, munge; one fake
GPU as gres) and .ci/run stops it by PID at the end; without it these tests skip.
Proof that a job went through sbatch: Snakemake's "submitted with SLURM jobid"
line, and that job id in Slurm's own job-completion record (jobcomp.log).
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest

from workflow_helpers import (
    ENCODER_RUN,
    REPO,
    changed,
    offline_environment,
    score_mtimes as score_files,
    snakemake,
    snakemake_command,
    with_fewshot_task,
    write_config,
)

SLURM_DIR = Path(os.environ.get("PAINTERS_SLURM_DIR", "/tmp/painters-slurm"))
JOBCOMP = SLURM_DIR / "log/jobcomp.log"


def slurm_is_up() -> bool:
    try:
        state = subprocess.run(["timeout", "-k", "2", "10", "sinfo", "-h", "-N", "-o", "%T"],
                               capture_output=True, text=True).stdout
    except FileNotFoundError:
        return False
    return state.startswith(("idle", "mix", "alloc"))


pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(not slurm_is_up(), reason="no Slurm cluster up (start one with .ci/slurm_up.sh)"),
]

# The reduced demo with the evaluation asking for a GPU, as config/paper.yaml does, on a
# 0-shot and a few-shot benchmark (whose prompts must not depend on where it ran).
CLUSTER = changed(lambda c: (
    c["models"]["demo"]["resources"].update(gpu=1, mem_mb=2000, runtime=10, cpus_per_task=1),
    c.update(sweeps=[{"name": "skip", "variants": ["skip"], "N": [0]}]),  # baseline, skip-N0 x 2 benchmarks
    c.update(benchmarks=["demo_choice"]), with_fewshot_task(c),
))
EVALUATIONS = 4
JOBS = 2  # one per benchmark: both plans fit one job (passes_per_job 2 in REDUCED)


def slurm_command(workdir: Path, configfile: Path, *args: str) -> list[str]:
    # `--profile slurm` as users type it at the repository root (the cwd below); the
    # Slurm logs go to the scratch folder, not to the repository's results/
    return ["timeout", "-k", "10", "480", *snakemake_command(
        workdir, "--profile", "slurm", "--configfile", str(configfile),
        "--slurm-logdir", str(workdir / "results/logs/slurm"),
        # poll every 5 s, not every 20: the jobs here take seconds (MinJobAge 300 >= 3 x 5)
        "--slurm-init-seconds-before-status-checks", "5", *args)]


def run_on_slurm(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(slurm_command(workdir, configfile, *args), cwd=REPO,
                          env=offline_environment(PAINTERS_SLURM_PARTITION="debug"), capture_output=True, text=True)


def submitted(output: str, rule: str) -> list[str]:
    """Slurm job ids of `rule`'s jobs, from Snakemake's submission lines."""
    pattern = rf"submitted with SLURM jobid (\d+) \(log: [^)]*/rule_{rule}[^/]*/"
    return re.findall(pattern, output)


def job_records() -> dict[str, dict[str, str]]:
    """Slurm's job-completion records: {job id: {field: value}}."""
    records = {}
    for line in JOBCOMP.read_text().splitlines():
        fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
        records[fields["JobId"]] = fields
    return records


def values(workdir: Path) -> pl.DataFrame:
    frame = pl.read_parquet(workdir / "results/scores/*/*/*.parquet")
    return frame.select("plan", "benchmark", "metric", "filter", "value", "stderr", "n_samples", "prompt_hash").sort(
        "plan", "benchmark", "metric", "filter"
    )


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("local")
    result = snakemake(workdir, "--cores", "2", "--configfile", str(write_config(workdir, CLUSTER)), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def slurm_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("slurm")
    started = time.perf_counter()
    result = run_on_slurm(workdir, write_config(workdir, CLUSTER))
    print(f"reduced demo on Slurm: {time.perf_counter() - started:.0f} s")
    assert result.returncode == 0, result.stderr[-4000:]
    return workdir, result.stdout + result.stderr


def test_every_evaluation_went_through_sbatch_and_got_its_gpu(slurm_run):
    workdir, output = slurm_run
    job_ids = submitted(output, "evaluate_demo")
    assert len(job_ids) == JOBS and len(score_files(workdir)) == EVALUATIONS
    records = job_records()
    for job_id in job_ids:
        assert records[job_id]["JobState"] == "COMPLETED", records[job_id]
        assert records[job_id]["WorkDir"] == str(workdir)
    # the job's own log: it ran inside the Slurm job and saw the GPU Slurm gave it
    logs = list((workdir / "results/logs/evaluate/demo").rglob("*.log"))
    assert len(logs) == JOBS
    for log in logs:
        assert re.search(r"Slurm job (\d+), CUDA_VISIBLE_DEVICES=0\n", log.read_text()), log
        # one model load per job, and both plans of its benchmark scored in one shared pass
        assert log.read_text().count("loaded ") == 1
        assert "2 plan(s) in one shared pass" in log.read_text()


def test_scores_on_slurm_equal_a_local_run(slurm_run, local_run):
    workdir, _ = slurm_run
    assert values(workdir).height > 0
    assert values(workdir).equals(values(local_run))


def test_the_report_builds(slurm_run):
    workdir, _ = slurm_run
    report = workdir / "reports/report.html"
    assert report.is_file() and "fig04_skip" in report.read_text()


def test_a_cancelled_job_fails_and_a_rerun_completes_it(slurm_run):
    workdir, _ = slurm_run
    before = score_files(workdir)
    more = changed(lambda c: c["sweeps"][0].update(N=[0, 1]), CLUSTER)  # skip-N1 x 2 benchmarks
    configfile = write_config(workdir, more, "more.yaml")
    # retries 0: the cancelled job fails for good instead of being resubmitted at once
    run = subprocess.Popen(slurm_command(workdir, configfile, "--retries", "0"), cwd=REPO, env=offline_environment(),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    cancelled = None
    deadline = time.monotonic() + 240
    while cancelled is None and time.monotonic() < deadline and run.poll() is None:
        queue = subprocess.run(["squeue", "-h", "-t", "RUNNING", "-o", "%i %k"], capture_output=True, text=True).stdout
        running = [line.split()[0] for line in queue.splitlines() if "rule_evaluate_demo" in line]
        if running:
            time.sleep(0.5)  # let it get going (a job here lasts a few seconds: imports, model load)
            cancelled = running[0]
            subprocess.run(["scancel", cancelled], check=True)
        time.sleep(0.5)
    try:
        output, _ = run.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        raise
    assert cancelled, "no evaluation job was seen running"
    assert run.returncode != 0, output[-3000:]
    assert f"SLURM-jobid {cancelled}" in output or f"jobid {cancelled}" in output
    assert "Error in rule evaluate_demo" in output
    assert job_records()[cancelled]["JobState"] == "CANCELLED"
    after_cancel = score_files(workdir)
    assert len(after_cancel) == len(before) + 1  # the other new job went on (keep-going)
    assert {p: after_cancel[p] for p in before} == before

    result = run_on_slurm(workdir, configfile)
    assert result.returncode == 0, result.stderr[-3000:]
    final = score_files(workdir)
    assert len(final) == len(before) + 2
    assert {p: final[p] for p in after_cancel} == after_cancel  # nothing that had finished ran again
    assert len(submitted(result.stdout + result.stderr, "evaluate_demo")) == 1


def test_a_job_over_its_memory_is_retried_with_more(slurm_run):
    """Slurm kills a job over its --mem (OverMemoryKill); the profile's retries resubmit it
    with mem_mb x attempt until it fits (the plugin reports the kill as a failed job)."""
    workdir, _ = slurm_run
    # the job step (snakemake jobstep + painters) peaks near 800 MB: 400 is killed; 800 or 1200 fits
    small = changed(lambda c: (c["models"]["demo"]["resources"].update(mem_mb=400),
                               c["sweeps"].append({"name": "random", "variants": ["random"], "N": [0], "seeds": [3]})),
                    CLUSTER)
    configfile = write_config(workdir, small, "small.yaml")
    target = "results/scores/demo/random-N0-S3/demo_choice.parquet"
    result = run_on_slurm(workdir, configfile, target)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert (workdir / target).is_file()
    attempts = [job_records()[job_id] for job_id in submitted(output, "evaluate_demo")]
    assert len(attempts) >= 2
    assert attempts[0]["JobState"] in {"FAILED", "OUT_OF_MEMORY"} and "mem=400M" in attempts[0]["Tres"]
    assert attempts[-1]["JobState"] == "COMPLETED"
    assert f"mem={400 * len(attempts)}M" in attempts[-1]["Tres"]
    killed_logs = [log for folder in (workdir / "results/logs/slurm").glob("rule_evaluate_demo_*") for log in folder.rglob("*.log")]
    assert any("exceeded memory limit" in log.read_text() for log in killed_logs)


# The encoder half on Slurm: the real MiniLM-L6 fine-tuned under two plans, one fine-tuning job
# asking for a GPU as config/paper.yaml's BERT-Large does.
def encoder_cluster_config():
    return changed(lambda c: (c["models"]["minilm"]["resources"].update(gpu=1, mem_mb=3000, runtime=10, cpus_per_task=1),
                              c.update(sweeps=[{"variants": ["skip"], "N": [1]}])), ENCODER_RUN)


def test_a_fine_tuning_job_runs_through_sbatch_and_scores_as_locally(tmp_path):
    config = encoder_cluster_config()
    local = tmp_path / "local"
    local.mkdir()
    result = snakemake(local, "--cores", "2", "--configfile", str(write_config(local, config)), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    cluster = tmp_path / "slurm"
    cluster.mkdir()
    result = run_on_slurm(cluster, write_config(cluster, config))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    (job_id,) = submitted(output, "finetune_minilm")
    assert job_records()[job_id]["JobState"] == "COMPLETED"
    (log,) = (cluster / "results/logs/finetune/minilm").rglob("*.log")
    assert re.search(rf"Slurm job {job_id}, CUDA_VISIBLE_DEVICES=0\n", log.read_text()), log.read_text()[:500]
    assert len(score_files(cluster)) == 2  # baseline and skip-N1 on demo_sentiment, seed 0
    assert values(cluster).equals(values(local))  # the same fine-tuning, the same scores
