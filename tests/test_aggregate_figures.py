"""Aggregation (normalization, medians), figures and the similarity matrix, on synthetic scores."""

import math
from datetime import datetime, timezone

import polars as pl
import pytest
import torch

from painters import aggregate, figures, plan, similarity
from painters.results import SCORE_COLUMNS, score_path, scores_frame, write_atomic

T = 8
CHANCE = {"choice": 0.25, "cloze": 0.0}


def row(model, plan_key, benchmark, metric, value, random_baseline, higher=True, filter_name="none"):
    p = plan.parse(plan_key)
    return {
        "model": model, "model_id": f"/models/{model}", "plan": plan_key, "variant": p.variant, "N": p.N,
        "M": p.affected(T), "K": p.K, "seed": p.seed, "layer": p.layer, "percent": p.percent, "num_layers": T,
        "benchmark": benchmark, "metric": metric, "filter": filter_name, "value": value, "stderr": 0.01,
        "higher_is_better": higher, "random_baseline": random_baseline, "n_samples": 100, "limit": 100.0,
        "num_fewshot": 0, "fewshot_seed": 1234, "prompt_hash": "0" * 16, "generation_kwargs": None,
        "settings": '{"dtype": "float32", "max_gen_toks": null}', "batch_size": "16", "batch_size_used": 16,
        "bootstrap_iters": 1000, "dtype": "float32", "device": "cpu", "seconds": 0.1, "painters_version": "0",
        "lm_eval_version": "0.4.13", "transformers_version": "5", "torch_version": "2", "timestamp": datetime.now(timezone.utc),
    }


def fake_score(plan_key, benchmark, model="tiny"):
    """A deterministic made-up score that falls as more layers are affected."""
    p = plan.parse(plan_key)
    m = p.affected(T) or 0
    full = {"choice": 0.85, "cloze": 0.6}[benchmark]
    return CHANCE[benchmark] + (full - CHANCE[benchmark]) * (1 - m / T) * (1 - 0.01 * ((p.seed or 0) + (p.K or 0)))


def write_scores(folder, models=("tiny",)):
    keys = ["baseline"]
    for variant in figures.MIDDLE_VARIANTS:
        keys += [p.key for p in plan.plans_for(variant, T, seeds=[0, 1, 2], K=[1, 2, 3])]
    keys += [p.key for p in plan.plans_for("skip_layer", T) + plan.plans_for("switch", T)]
    for model in models:
        for key in keys:
            for benchmark in ("choice", "cloze"):
                rows = [row(model, key, benchmark, "acc", fake_score(key, benchmark), CHANCE[benchmark])]
                if benchmark == "choice":
                    rows.append(row(model, key, benchmark, "acc_norm", fake_score(key, benchmark), 0.25))
                else:
                    rows.append(row(model, key, benchmark, "perplexity", 10.0, None, higher=False))
                write_atomic(scores_frame(rows), score_path(folder, model, key, benchmark))
    return folder / "scores"


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    return aggregate.summarize(aggregate.read_scores(write_scores(tmp_path_factory.mktemp("results"), models=("tiny", "big"))))


def test_normalization_maps_chance_to_zero_and_the_full_model_to_one(summary):
    base = summary.filter((pl.col("plan") == "baseline") & (pl.col("metric") == "acc"))
    assert base["normalized"].to_list() == pytest.approx([1.0] * len(base))
    skip = summary.filter((pl.col("model") == "tiny") & (pl.col("plan") == "skip-N1") & (pl.col("benchmark") == "choice")
                          & (pl.col("metric") == "acc")).row(0, named=True)
    assert skip["normalized"] == pytest.approx((skip["value"] - 0.25) / (0.85 - 0.25))
    assert skip["M"] == 5 and skip["fraction"] == pytest.approx(5 / 8)
    perplexity = summary.filter(pl.col("metric") == "perplexity")
    assert perplexity["normalized"].null_count() == len(perplexity)


def test_primary_metric_and_normalized_median(summary):
    primary = summary.filter(pl.col("primary") & (pl.col("benchmark") != "median"))
    assert set(primary.select("benchmark", "metric").unique().rows()) == {("choice", "acc_norm"), ("cloze", "acc")}
    median = summary.filter((pl.col("model") == "tiny") & (pl.col("plan") == "reverse-N2") & (pl.col("benchmark") == "median"))
    parts = primary.filter((pl.col("model") == "tiny") & (pl.col("plan") == "reverse-N2"))["normalized"].to_list()
    assert median["normalized"][0] == pytest.approx(sorted(parts)[len(parts) // 2 - 1] / 2 + sorted(parts)[len(parts) // 2] / 2)


def test_missing_baseline_leaves_normalized_null(tmp_path):
    rows = [row("m", "skip-N1", "choice", "acc", 0.5, 0.25)]
    write_atomic(scores_frame(rows), score_path(tmp_path, "m", "skip-N1", "choice"))
    table = aggregate.summarize(aggregate.read_scores(tmp_path / "scores"))
    assert table.filter(pl.col("benchmark") == "choice")["normalized"].to_list() == [None]


WANTED = {"fewshot_seed": 1234, "limit": 100, "bootstrap_iters": 1000, "dtype": "float32", "max_gen_toks": None}


def test_scores_written_before_few_shot_seeding_are_read_and_only_few_shot_ones_are_stale(tmp_path):
    from painters.results import read_score_file, stale_scores

    new_columns = ["fewshot_seed", "prompt_hash", "generation_kwargs", "settings", "batch_size", "batch_size_used",
                   "bootstrap_iters"]
    paths = {}
    for plan_key, benchmark, shots in [("baseline", "choice", 0), ("skip-N1", "choice", 0), ("baseline", "gsm", 5),
                                       ("skip-N1", "gsm", 5)]:
        frame = scores_frame([{**row("m", plan_key, benchmark, "acc", 0.5, 0.25), "num_fewshot": shots}])
        paths[plan_key, benchmark] = score_path(tmp_path, "m", plan_key, benchmark)
        write_atomic(frame.drop(new_columns) if plan_key == "baseline" else frame, paths[plan_key, benchmark])
    old = read_score_file(paths["baseline", "gsm"])
    assert old.columns == list(SCORE_COLUMNS) and old["fewshot_seed"].to_list() == [None]
    assert aggregate.read_scores(tmp_path / "scores").height == 4
    missing = score_path(tmp_path, "m", "skip-N2", "gsm")
    stale = stale_scores([*map(str, paths.values()), str(missing)], WANTED)
    assert list(stale) == [str(paths["baseline", "gsm"])]  # 0-shot and seeded few-shot scores stand
    assert "before few-shot seeding" in stale[str(paths["baseline", "gsm"])][0]
    reseeded = stale_scores(map(str, paths.values()), {**WANTED, "fewshot_seed": 7})
    assert set(reseeded) == {str(paths["baseline", "gsm"]), str(paths["skip-N1", "gsm"])}
    assert "made with fewshot_seed 1234, the config asks for 7" in reseeded[str(paths["skip-N1", "gsm"])][0]


@pytest.mark.parametrize(
    ("recorded", "wanted", "reason"),
    [
        ({}, {}, None),
        ({}, {"limit": None}, "made with limit 100, the config asks for none"),
        ({}, {"bootstrap_iters": 0}, "made with bootstrap_iters 1000, the config asks for 0"),
        ({}, {"dtype": "bfloat16"}, "made with dtype float32, the config asks for bfloat16"),
        # max_gen_toks counts for generated answers only
        ({}, {"max_gen_toks": 8}, None),
        ({"generation_kwargs": '{"max_gen_toks": 256}'}, {"max_gen_toks": 8}, "made with max_gen_toks none, the config asks for 8"),
        # an older file that records no settings is taken as made with those asked for
        ({"settings": None, "bootstrap_iters": None}, {"dtype": "bfloat16", "bootstrap_iters": 0}, None),
    ],
)
def test_a_score_is_stale_when_a_recorded_setting_differs(tmp_path, recorded, wanted, reason):
    from painters.results import stale_scores

    path = score_path(tmp_path, "m", "skip-N1", "choice")
    write_atomic(scores_frame([{**row("m", "skip-N1", "choice", "acc", 0.5, 0.25), **recorded}]), path)
    stale = stale_scores([str(path)], {**WANTED, **wanted})
    assert (stale[str(path)][0] if stale else None) == reason


def test_duplicate_results_are_an_error():
    frame = scores_frame([row("m", "baseline", "choice", "acc", 0.5, 0.25)] * 2)
    with pytest.raises(ValueError, match="same result twice"):
        aggregate.summarize(frame)


def test_no_scores_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        aggregate.read_scores(tmp_path)


@pytest.mark.parametrize("figure", [f for f in figures.FIGURES if f != "fig03_similarity"])
def test_every_figure_renders_png_and_svg(summary, tmp_path, figure):
    fig = figures.draw(figure, summary, "all" if figure == "skip_fraction" else "tiny")
    png, svg = figures.save_atomic(fig, tmp_path / f"{figure}.png", dpi=60)
    assert png.read_bytes()[:4] == b"\x89PNG" and svg.read_text().lstrip().startswith("<?xml")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{figure}.png", f"{figure}.svg"]


def test_heatmap_boxes_the_best_K_per_M(summary):
    fig = figures.draw("fig10_heatmap", summary, "tiny")
    boxes = [p for p in fig.axes[0].patches if p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
    # fake scores fall with K, so the best K is the smallest (K=1, column 0) for each of the 4 M values
    assert len(boxes) == 4 and {b.get_x() for b in boxes} == {0}


def test_a_figure_without_its_plans_says_what_it_needs(summary):
    with pytest.raises(ValueError, match="fig04_skip.*variant skip"):
        figures.draw("fig04_skip", summary.filter(pl.col("variant") != "skip"), "tiny")


def test_similarity_matrix_properties():
    from painters.tiny import tiny_model, train_tokenizer

    texts = ["the cat sat on the mat", "a dog ran", "layers paint on a shared canvas of numbers"]
    tokenizer = train_tokenizer(texts * 5, vocab_size=300)
    model = tiny_model("llama", tokenizer.vocab_size, seed=0, layers=4).eval()
    matrix = similarity.compute(model, tokenizer, texts)
    assert matrix.shape == (4, 4)
    assert torch.allclose(matrix, matrix.T, atol=1e-5)
    assert torch.allclose(matrix.diagonal(), torch.ones(4), atol=1e-5)
    assert bool(((matrix <= 1 + 1e-5) & (matrix >= -1 - 1e-5)).all())
    # padding must not count: texts of different lengths batched together (padded) or one by one agree
    one_by_one = similarity.compute(model, tokenizer, texts, batch_size=1)
    assert torch.allclose(matrix, one_by_one, atol=1e-5)
    frame = similarity.similarity_frame("tiny", matrix)
    assert len(frame) == 16 and math.isclose(frame.filter((pl.col("layer_i") == 2) & (pl.col("layer_j") == 2))["cosine"][0], 1, abs_tol=1e-5)
