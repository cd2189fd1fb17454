"""Sweep expansion: config grids -> (model, plan, benchmark) jobs."""

import json

import pytest

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
