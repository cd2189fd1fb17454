"""The workflow's configs: schema errors, the paper's job count, envs in step with pyproject."""

import re
import time
import tomllib

import pytest
import yaml

from workflow_helpers import REPO, planned_jobs, planned_scores, snakemake, write_config


def demo_like(**changes):
    config = {
        "demo": {"enabled": True},
        "models": {"demo": {"path": "results/demo/model"}},
        "benchmarks": ["demo_choice", "demo_cloze"],
        "include_paths": ["results/demo/data/tasks"],
        "sweeps": [{"variants": ["skip"], "N": [0, 1]}],
    }
    config.update(changes)
    return config


def test_paper_dry_run_plans_every_job(tmp_path):
    """7B: (4 variants x 16 N + 10 seeds x 16 + 16 looped + baseline) x 6 benchmarks + 378 new heatmap
    plans x 6 + 63 per-layer plans; 13B: 301 x 6 + 79; 70B: 601 x 6 + 159."""
    started = time.perf_counter()
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/paper.yaml"))
    seconds = time.perf_counter() - started
    assert result.returncode == 0, result.stderr
    jobs = planned_jobs(result)
    decoders = (240 + 1) * 6 + 378 * 6 + 63 + 301 * 6 + 79 + 601 * 6 + 159
    # BERT-Large: (4 variants x 12 N + 3 seeds x 12 + 12 looped + baseline) x 7 GLUE tasks + 47 per-layer plans on RTE
    encoder = (4 * 12 + 3 * 12 + 12 + 1) * 7 + 24 + 23
    # ViT-B/16 and DeiT-B as they are: (4 variants x 6 N + 10 seeds x 6 + 6 N x 6 K + baseline) + 12 + 11 per-layer plans
    vision = 2 * (4 * 6 + 10 * 6 + 6 * 6 + 1 + 12 + 11)
    assert len(planned_scores(result)) == decoders + encoder + vision == 10153 + 288
    # grouped into jobs of one model and benchmark (a model load each): a few hundred
    assert 6 * 3 < jobs["evaluate"] <= 400
    assert jobs["finetune"] == encoder  # glue.plans_per_job 1: one fine-tuning run per Slurm job
    assert jobs["evaluate_images"] == 2  # one per vision model: every plan in one pass over ImageNet's validation images
    assert jobs["figure_fig10_heatmap"] == 3 and jobs["figure_skip_fraction"] == 1 and jobs["figure_decoder_encoder"] == 1
    print(f"paper dry-run: {jobs['evaluate']} evaluation jobs for 9427 scores, {sum(jobs.values())} jobs in {seconds:.1f} s")


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"limit": -1}, r"config limit: -1 is less than or equal to the minimum of 0"),
        ({"modles": {}}, r"config top level: unknown key\(s\) 'modles'; valid keys: results, reports, demo, models,"),
        ({"sweeps": [{"variants": ["skipp"]}]}, r"'skipp' is not one of \['baseline', 'skip'"),
        ({"sweeps": [{"variants": ["skip"], "K": [0]}]}, r"config sweeps\.0\.K\.0: 0 is less than the minimum of 1"),
        ({"benchmarks": []}, r"benchmarks: none given, but demo are decoders, scored on lm-eval benchmarks"),
        ({"glue": {"tasks": ["rtee"]}}, r"glue\.tasks: unknown task\(s\) rtee \(valid: cola, sst2, mrpc"),
        ({"glue": {"tasks": ["mine"], "custom_tasks": {"mine": "sst2"}}}, r"glue\.custom_tasks mine read local files: set glue\.data_dir"),
        ({"glue": {"data_dir": "./no-glue"}}, r"glue\.data_dir './no-glue': no such folder"),
        ({"glue": {"custom_tasks": {"mine": "sst3"}}}, r"'sst3' is not one of \['cola', 'sst2'"),
        ({"models": {"demo": {"path": "results/demo/model"}, "enc": {"path": "{minilm_l6}", "device": "cpu"}},
          "glue": {"fp16": True}}, r"glue\.fp16 needs a GPU, but models\.enc\.device is cpu"),
        ({"sweeps": [{"variants": ["skip"], "benchmarks": ["rte"], "models": ["demo"]}]},
         r"model demo is a decoder and needs lm-eval benchmarks \(the config's benchmarks\); the grid gives rte"),
        ({"sweeps": [{"variants": ["skip"], "benchmarks": ["demo_rte"]}]},
         r"\['demo_rte'\] are neither in benchmarks \(valid: demo_choice, demo_cloze\) nor GLUE tasks \(valid: cola"),
        ({"sweeps": [{"variants": ["skip"], "models": ["llama"]}]}, r"sweeps\[0\]\.models: \['llama'\] not in models \(valid: demo\)"),
        ({"sweeps": [{"variants": ["skip"], "N": [7]}]}, r"N=7 .*12-layer model.*0\.\.5"),
        ({"sweeps": [{"variants": ["parallel"], "M": [4]}]}, r"M \[4\] is not possible on model demo \(12 layers\)"),
        ({"models": {"demo": {"path": "./no-such-model"}}}, r"models\.demo\.path './no-such-model': no such folder"),
        ({"models": {"m": {"path": "org/never-downloaded"}}}, r"models\.m\.path 'org/never-downloaded'.*num_layers"),
        ({"models": {"bad name": {"path": "x"}}}, r"'bad name' does not match"),
    ],
)
def test_config_errors_name_the_key_the_value_and_what_is_valid(tmp_path, changes, message):
    configfile = write_config(tmp_path, demo_like(**changes))
    result = snakemake(tmp_path, "-n", "--configfile", str(configfile))
    assert result.returncode != 0
    assert re.search(message, result.stdout + result.stderr, re.S), result.stdout + result.stderr
    assert len((result.stdout + result.stderr).splitlines()) < 25  # one message, not the schema
    assert not (tmp_path / "results").exists()


def test_envs_pin_what_pyproject_pins():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    env = yaml.safe_load((REPO / "envs/painters.yaml").read_text())
    pip = next(item["pip"] for item in env["dependencies"] if isinstance(item, dict))
    assert sorted(d for d in pip if not d.startswith("-e")) == sorted(pyproject["project"]["dependencies"])
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    assert pyproject["project"]["requires-python"].lstrip(">=") in python


def test_every_rule_has_a_log_and_a_conda_env(tmp_path):
    # in an empty folder, so that every rule has jobs (evaluation rules exist only for pending scores)
    result = snakemake(tmp_path, "--lint", "--configfile", str(REPO / "config/config.yaml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_the_demo_paths_follow_the_results_folder(tmp_path):
    """`{results}` in the demo config's paths: `--config results=res2` builds and uses res2/demo/..."""
    (tmp_path / "results/demo/model").mkdir(parents=True)  # another run's model must not be taken
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/config.yaml"), "--config", "results=res2")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Missing output files: res2/demo/model" in output and "input: res2/demo/data, res2/demo/model" in output
    assert "results/" not in output.replace("res2/", "")


def test_every_similarity_job_waits_for_the_demo_texts(tmp_path):
    """The encoder's Fig 3 reads the demo's texts too: its job must wait for the demo data (it is not a demo model)."""
    result = snakemake(tmp_path, "-n", "--configfile", str(REPO / "config/config.yaml"))
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    jobs = re.findall(r"rule similarity:\n((?:    .*\n)+)", output)
    assert {re.search(r"output: (\S+)", job).group(1) for job in jobs} == {"results/similarity/demo.parquet",
                                                                            "results/similarity/minilm.parquet"}
    assert all(re.search(r"input: .*results/demo/data", job) for job in jobs), jobs


def test_a_model_folder_without_weights_is_refused_before_any_job(tmp_path):
    folder = tmp_path / "weightless"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "llama", "num_hidden_layers": 4}')
    (folder / "tokenizer.json").write_text("{}")
    config = demo_like(models={"m": {"path": str(folder)}}, demo={"enabled": False}, include_paths=[])
    result = snakemake(tmp_path, "-n", "--configfile", str(write_config(tmp_path, config)))
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert re.search(rf"models\.m\.path '{re.escape(str(folder))}': the folder has no weights \(\*\.safetensors", output), output
    assert "evaluate_" not in output and not (tmp_path / "results").exists()
