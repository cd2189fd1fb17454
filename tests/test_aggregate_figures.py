"""Aggregation (normalization, medians), figures and the similarity matrix, on synthetic scores."""

import math
import statistics
from datetime import datetime, timezone

import polars as pl
import pytest
import torch
from jinja2 import Environment
from painters import aggregate, figures, plan, similarity
from painters.results import SCORE_COLUMNS, score_path, scores_frame, write_atomic

T = 8
CHANCE = {"choice": 0.25, "cloze": 0.0}


def row(model, plan_key, benchmark, metric, value, random_baseline, higher=True, filter_name="none"):
    p = plan.parse(plan_key)
    return {
        "model": model, "model_id": f"/models/{model}", "plan": plan_key, "variant": p.variant, "N": p.N,
        "M": p.affected(T), "K": p.K, "seed": p.seed, "layer": p.layer, "percent": p.percent, "num_layers": T,
        "benchmark": benchmark, "train_seed": None, "metric": metric, "filter": filter_name, "value": value, "stderr": 0.01,
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
    keys += [p.key for variant in ("shuffle_all", "prune", "shuffle_prune")
             for p in plan.plans_for(variant, T, seeds=[0, 1, 2], percents=[25])]
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


def test_a_changed_kv_cache_makes_exactly_the_generated_scores_of_parallel_plans_stale(tmp_path):
    from painters.results import stale_scores

    paths = {}
    for plan_key in ("baseline", "skip-N1", "reverse-N0", "parallel-N1", "looped_parallel-N0-K2", "parallel-N3"):
        for benchmark, generation in (("gsm", '{"max_gen_toks": 8}'), ("choice", None)):
            paths[plan_key, benchmark] = score_path(tmp_path, "m", plan_key, benchmark)
            frame = scores_frame([{**row("m", plan_key, benchmark, "acc", 0.5, 0.25), "generation_kwargs": generation}])
            write_atomic(frame, paths[plan_key, benchmark])  # made before kv_cache was recorded: exact
    assert stale_scores(map(str, paths.values()), {**WANTED, "kv_cache": "exact"}) == {}
    stale = stale_scores(map(str, paths.values()), {**WANTED, "kv_cache": "reference"})
    # parallel-N3 of a T-layer model has one middle layer: a step of one call, the same in both modes
    assert set(stale) == {str(paths["parallel-N1", "gsm"]), str(paths["looped_parallel-N0-K2", "gsm"])}
    assert all(reason == "made with kv_cache exact, the config asks for reference" for reason, _ in stale.values())
    settings = '{"dtype": "float32", "max_gen_toks": null, "kv_cache": "reference"}'
    write_atomic(scores_frame([{**row("m", "parallel-N1", "gsm", "acc", 0.5, 0.25), "settings": settings,
                                "generation_kwargs": "{}"}]), paths["parallel-N1", "gsm"])
    assert str(paths["parallel-N1", "gsm"]) not in stale_scores(map(str, paths.values()), {**WANTED, "kv_cache": "reference"})
    assert str(paths["parallel-N1", "gsm"]) in stale_scores(map(str, paths.values()), {**WANTED, "kv_cache": "exact"})


def test_duplicate_results_are_an_error():
    frame = scores_frame([row("m", "baseline", "choice", "acc", 0.5, 0.25)] * 2)
    with pytest.raises(ValueError, match="same result twice"):
        aggregate.summarize(frame)


def test_no_scores_names_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        aggregate.read_scores(tmp_path)


# decoder_encoder needs an encoder too: its own tests below; the LayerShuffle figures: test_layershuffle_study.py
ONE_KIND_FIGURES = [f for f in figures.FIGURES if f not in ("fig03_similarity", "decoder_encoder", *figures.LAYERSHUFFLE_FIGURES)]


@pytest.mark.parametrize("figure", ONE_KIND_FIGURES)
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


# ---- figures are checked by the table they plot (figures.table; FIGURE.csv beside FIGURE.png)


def png_bytes(figure, summary, model="tiny", K=None):
    import io

    import matplotlib.pyplot as plt

    fig, plotted = figures.render(figure, summary, model, K=K)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=40)
    plt.close(fig)
    return buffer.getvalue(), plotted


def test_figs_9_and_11_draw_one_stated_K_whatever_the_row_order(summary):
    # every K (1, 2, 3) has the same number of scores: the choice must not fall to group order
    seen = set()
    for seed in range(4):
        shuffled = summary.sample(fraction=1.0, shuffle=True, seed=seed)
        for figure in ("fig09_looped_parallel", "fig11_all_variants"):
            png, plotted = png_bytes(figure, shuffled)
            seen.add((figure, png, plotted.write_csv()))
            assert figures.table_facts(plotted)["K"] == [1]  # the stated rule: most scores, the smallest K on a tie
    assert len(seen) == 2  # one PNG and one table per figure
    # the workflow passes its K (the first K of its first looped-parallel sweep): both figures draw it
    for figure in ("fig09_looped_parallel", "fig11_all_variants"):
        assert figures.table(figure, summary, "tiny", K=2).filter(pl.col("variant") == "looped_parallel")["K"].unique().to_list() == [2]
    assert "looped parallel (K=2)" in figures.table("fig11_all_variants", summary, "tiny", K=2)["series"].to_list()
    legend = [t.get_text() for t in figures.draw("fig11_all_variants", summary, "tiny", K=2).axes[0].get_legend().get_texts()]
    assert "looped parallel (K=2)" in legend
    with pytest.raises(ValueError, match="K=5 was asked for.*have K 1, 2, 3"):
        figures.table("fig09_looped_parallel", summary, "tiny", K=5)


@pytest.mark.parametrize("figure", ["fig07_random", "fig11_all_variants", "whole_stack", "fig10_heatmap"])
def test_the_plotted_table_does_not_depend_on_row_order(summary, figure):
    # scores with many digits, so that a sum taken in another order would show
    noise = pl.concat_str("plan", "benchmark", "metric").hash(seed=1) % 100_003 / 100_003
    noisy = summary.with_columns(pl.col("normalized") + noise / 3)
    tables = {figures.table(figure, noisy.sample(fraction=1.0, shuffle=True, seed=seed), "tiny").write_csv() for seed in range(8)}
    assert len(tables) == 1


def test_a_mean_over_seeds_does_not_depend_on_row_order():
    import itertools

    # these three sum to different floats in different orders (group order differs from run to run)
    values = [0.41791044776119407, 0.3283582089552239, 0.5223880597014925]
    means = set()
    for order in itertools.permutations(range(3)):
        points = pl.DataFrame({"series": ["random"] * 3, "seed": list(order), "y": [values[i] for i in order],
                               "stderr": [0.01 * (i + 1) for i in order]})
        means.add(figures._over_seeds(points, ["series"]).select("y", "stderr").row(0))
    assert len(means) == 1


def test_the_fallback_K_is_the_one_with_the_most_scores(summary):
    # K=3 scored on one more benchmark (as the demo's variants sweep is, against its heatmap sweep)
    extra = summary.filter((pl.col("variant") == "looped_parallel") & (pl.col("K") == 3) & (pl.col("benchmark") == "cloze"))
    more = pl.concat([summary, extra.with_columns(pl.lit("cloze2").alias("benchmark"))])
    assert figures.line_K(more, "tiny") == 3 and figures.line_K(summary, "tiny") == 1


def uneven_summary(folder):
    """Like the demo: looped parallel K=1, 2 on two benchmarks (the heatmap sweep), K=3 and every other
    variant on three (the variants sweep). Normalized scores: choice a, cloze a/2, pair 1."""
    chance = {"choice": 0.25, "cloze": 0.0, "pair": 0.5}
    keys = ["baseline", *[p.key for p in plan.plans_for("looped_parallel", T, K=[1, 2, 3])]]
    keys += [p.key for v in ("skip", "parallel") for p in plan.plans_for(v, T)]
    for key in keys:
        p = plan.parse(key)
        a = (1 - p.affected(T) / T) * (1 - 0.01 * (p.K or 0))
        benchmarks = ("choice", "cloze") if p.K in (1, 2) else ("choice", "cloze", "pair")
        for benchmark in benchmarks:
            normalized = {"choice": a, "cloze": a / 2, "pair": 1.0}[benchmark] if key != "baseline" else 1.0
            value = chance[benchmark] + 0.4 * normalized
            rows = [{**row("tiny", key, benchmark, "acc", value, chance[benchmark]), "stderr": 0.02}]
            write_atomic(scores_frame(rows), score_path(folder, "tiny", key, benchmark))
    return aggregate.summarize(aggregate.read_scores(folder / "scores"))


def test_every_cell_and_point_is_a_median_over_the_same_benchmarks(tmp_path):
    summary = uneven_summary(tmp_path)
    heatmap = figures.table("fig10_heatmap", summary, "tiny")
    assert set(heatmap["benchmarks"]) == {"choice;cloze"} and figures.table_facts(heatmap)["K"] == [1, 2, 3]
    for cell in heatmap.iter_rows(named=True):
        a = (1 - cell["x"] / T) * (1 - 0.01 * cell["K"])
        assert cell["y"] == pytest.approx((a + a / 2) / 2)  # not the summary's three-benchmark median (a) for K=3
    k3 = summary.filter((pl.col("plan") == "looped_parallel-N0-K3") & (pl.col("benchmark") == "median"))["normalized"][0]
    assert k3 == pytest.approx(1 - 0.03 - (T - 1) / T * 0.97)  # the summary's own median spans three benchmarks
    # Figs 9 and 11 draw K=3 only: there every plan has all three benchmarks
    for figure in ("fig09_looped_parallel", "fig11_all_variants"):
        plotted = figures.table(figure, summary, "tiny", K=3)
        medians = plotted.filter(pl.col("benchmark") == "median")
        assert set(medians["benchmarks"]) == {"choice;cloze;pair"}
        assert figures.table_facts(plotted)["benchmarks"] == ["choice", "cloze", "pair"]
        for point in medians.iter_rows(named=True):
            a = (1 - point["x"] / T) * (1 - 0.01 * (point["K"] or 0))
            assert point["y"] == pytest.approx(statistics.median([a, a / 2, 1.0]))
    # and with K=1 the looped plans lack `pair`, so Fig 11's medians all drop it
    assert set(figures.table("fig11_all_variants", summary, "tiny", K=1)["benchmarks"]) == {"choice;cloze"}


def test_whole_stack_plans_have_a_figure_with_a_band_over_seeds(summary):
    plotted = figures.table("whole_stack", summary, "tiny")
    assert set(plotted["series"]) == {"layers in order", "layers shuffled"}
    points = {(r["series"], r["variant"], r["x"]): r for r in plotted.iter_rows(named=True)}
    assert set(points) == {("layers in order", "baseline", 0.0), ("layers in order", "prune", 0.25),
                           ("layers shuffled", "shuffle_all", 0.0), ("layers shuffled", "shuffle_prune", 0.25)}
    prune = points["layers in order", "prune", 0.25]  # 25 % of 8 layers: 2 dropped
    assert prune["seeds"] == "0;1;2" and prune["benchmarks"] == "choice;cloze"
    # fake scores fall 1 % per seed: mean over seeds 0.99, band 0.98 .. 1
    assert (prune["y_low"], prune["y"], prune["y_high"]) == pytest.approx((0.98, 0.99, 1.0))
    assert points["layers in order", "baseline", 0.0]["y"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="whole_stack.*shuffle_all, prune or shuffle_prune"):
        figures.table("whole_stack", summary.filter(~pl.col("variant").is_in(figures.STACK_VARIANTS)), "tiny")


def test_ticks_sit_at_the_M_values_present_and_fig2_has_a_plain_legend(summary):
    ax = figures.draw("fig04_skip", summary, "tiny").axes[0]
    assert list(ax.get_xticks()) == [1, 3, 5, 7]
    ax = figures.draw("fig02_skip_switch", summary, "tiny").axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "variant" not in legend and "benchmark" not in legend
    assert "skip layer (cloze)" in legend and "full model (cloze)" in legend
    assert list(ax.get_xticks()) == list(range(T))


def test_per_benchmark_points_carry_their_stderr_scaled_like_the_value(summary):
    skip = figures.table("fig04_skip", summary, "tiny")
    choice = skip.filter(pl.col("benchmark") == "choice")["stderr"].to_list()
    assert choice == pytest.approx([0.01 / (0.85 - 0.25)] * 4)  # normalized: divided by full model - chance
    assert skip.filter(pl.col("benchmark") == "median")["stderr"].null_count() == 4
    random_cloze = figures.table("fig07_random", summary, "tiny").filter(pl.col("benchmark") == "cloze")
    assert random_cloze["stderr"].to_list() == pytest.approx([math.sqrt(3) * 0.01 / 0.6 / 3] * 4)  # of the seed mean
    raw = figures.table("fig02_skip_switch", summary, "tiny").filter(pl.col("x").is_not_null())
    assert raw["stderr"].to_list() == pytest.approx([0.01] * len(raw))  # Fig 2 plots raw scores
    # drawn: each benchmark line has error bars
    ax = figures.draw("fig04_skip", summary, "tiny").axes[0]
    assert sum(1 for c in ax.containers if c.has_yerr) == 2


def test_the_cli_writes_the_plotted_table_beside_the_png_and_is_deterministic(summary, tmp_path):
    from painters import cli

    summary_path = tmp_path / "summary.parquet"
    summary.write_parquet(summary_path)
    outputs = []
    for attempt in range(2):
        out = tmp_path / str(attempt) / "fig09_looped_parallel.png"
        assert cli.main(["figures", "--summary", str(summary_path), "--model", "tiny", "--figure", "fig09_looped_parallel",
                         "--out", str(out), "--dpi", "40", "--k", "3"]) == 0
        outputs.append([out.with_suffix(ext).read_bytes() for ext in (".png", ".svg", ".csv")])
    assert outputs[0] == outputs[1]
    facts = figures.PlottedFacts(out.with_suffix(".csv"))
    assert (facts.benchmarks, facts.seeds, facts.K) == (["choice", "cloze"], [], [3])


@pytest.mark.parametrize("figure", ONE_KIND_FIGURES)
def test_captions_name_what_the_figure_plotted(summary, tmp_path, figure):
    from pathlib import Path
    from types import SimpleNamespace

    # Fig 2 scored on one benchmark only (as the demo's per_layer sweep): its caption names that one
    summary = summary.filter(~(pl.col("variant").is_in(["skip_layer", "switch"]) & (pl.col("benchmark") == "choice")))
    csv = tmp_path / f"{figure}.csv"
    aggregate.write_csv_atomic(figures.table(figure, summary, "all" if figure == "skip_fraction" else "tiny", K=3), csv)
    params = SimpleNamespace(plotted=figures.PlottedFacts(csv), limit=100)
    snakemake = SimpleNamespace(params=params, wildcards=SimpleNamespace(model="tiny"), config={})
    caption = Path(__file__).parent.parent / "workflow/report" / f"{figure}.rst"
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string(caption.read_text()).render(snakemake=snakemake)
    if figure == "fig02_skip_switch":
        assert "benchmarks (those every plotted plan has): cloze;" in text
    else:
        assert "each median spans all of them): choice, cloze;" in text
    if figure in ("fig07_random", "fig11_all_variants", "whole_stack"):
        assert "seeds: 0, 1, 2;" in text
    if figure in ("fig09_looped_parallel", "fig11_all_variants"):
        assert "K plotted: 3;" in text
    if figure == "fig10_heatmap":
        assert "K plotted: 1, 2, 3;" in text


# ---- fine-tuned (GLUE) scores: a fine-tuning seed each


def glue_row(model, plan_key, task, metric, value, chance, train_seed):
    return {**row(model, plan_key, task, metric, value, chance), "train_seed": train_seed, "limit": None,
            "fewshot_seed": None, "bootstrap_iters": None}


# task -> {plan: value per fine-tuning seed}; the baseline differs between seeds
GLUE_VALUES = {
    "rte": {"baseline": (0.70, 0.80), "skip-N1": (0.60, 0.50), "skip-N2": (0.65, 0.75)},
    "cola": {"baseline": (0.50, 0.40), "skip-N1": (0.10, 0.30), "skip-N2": (0.45, 0.30)},
}
GLUE_CHANCE = {"rte": ("acc", 0.5), "cola": ("mcc", 0.0)}


@pytest.fixture(scope="module")
def mixed_summary(tmp_path_factory):
    """The synthetic decoder scores of `tiny`, and an encoder `enc` fine-tuned with seeds 0 and 1."""
    folder = tmp_path_factory.mktemp("mixed")
    write_scores(folder)
    for task, values in GLUE_VALUES.items():
        metric, chance = GLUE_CHANCE[task]
        for plan_key, per_seed in values.items():
            for seed, value in enumerate(per_seed):
                write_atomic(scores_frame([glue_row("enc", plan_key, task, metric, value, chance, seed)]),
                             score_path(folder, "enc", plan_key, task, seed))
    return aggregate.summarize(aggregate.read_scores(folder / "scores"))


def glue_normalized(task, plan_key, seed):
    _, chance = GLUE_CHANCE[task]
    return (GLUE_VALUES[task][plan_key][seed] - chance) / (GLUE_VALUES[task]["baseline"][seed] - chance)


def test_a_fine_tuned_score_is_normalized_by_the_baseline_of_its_own_seed(mixed_summary):
    rows = mixed_summary.filter((pl.col("model") == "enc") & (pl.col("plan") == "skip-N1") & (pl.col("benchmark") == "rte"))
    by_seed = dict(zip(rows["train_seed"], rows["normalized"]))
    assert by_seed == pytest.approx({0: glue_normalized("rte", "skip-N1", 0), 1: glue_normalized("rte", "skip-N1", 1)})


def test_the_median_over_tasks_is_taken_of_the_mean_over_seeds(mixed_summary):
    median = mixed_summary.filter((pl.col("model") == "enc") & (pl.col("plan") == "skip-N1") & (pl.col("benchmark") == "median"))
    means = [statistics.mean(glue_normalized(task, "skip-N1", seed) for seed in (0, 1)) for task in GLUE_VALUES]
    assert median["normalized"].to_list() == pytest.approx([statistics.median(means)])
    assert median["n_samples"].to_list() == [2]  # two tasks
    decoder = mixed_summary.filter(pl.col("model") == "tiny")
    assert decoder["train_seed"].null_count() == len(decoder)


def test_figures_draw_a_fine_tuned_score_as_its_mean_over_seeds_with_their_spread(mixed_summary):
    plotted = figures.table("fig04_skip", mixed_summary, "enc")
    point = plotted.filter((pl.col("benchmark") == "rte") & (pl.col("x") == 5)).row(0, named=True)  # skip-N1: M = 8 - 2 - 1
    values = GLUE_VALUES["rte"]["skip-N1"]
    normalized = [glue_normalized("rte", "skip-N1", seed) for seed in (0, 1)]
    assert point["y"] == pytest.approx(statistics.mean(normalized))
    # the stderr is the spread of the mean over the two seeds, scaled like the value
    spread = statistics.stdev(values) / math.sqrt(2)
    assert point["stderr"] == pytest.approx(spread / statistics.mean([0.70 - 0.5, 0.80 - 0.5]))
    assert len(plotted.filter(pl.col("benchmark") == "rte")) == 2  # one point per M, seeds folded


def test_decoders_and_encoders_side_by_side_decoders_first(mixed_summary, tmp_path):
    plotted = figures.table("decoder_encoder", mixed_summary, "all")
    assert list(dict.fromkeys(plotted["model"].to_list())) == ["tiny", "enc"]
    enc = plotted.filter(pl.col("model") == "enc")
    assert set(enc["benchmarks"].to_list()) == {"cola;rte"}  # each panel spans its own model's benchmarks
    fig, _ = figures.render("decoder_encoder", mixed_summary, "all")
    assert [ax.get_title() for ax in fig.axes] == ["tiny: all variants", "enc: all variants"]
    png, svg = figures.save_atomic(fig, tmp_path / "decoder_encoder.png", dpi=60)
    assert png.read_bytes()[:4] == b"\x89PNG" and svg.is_file()
    with pytest.raises(ValueError, match="needs middle-layer variants of a decoder and of an encoder"):
        figures.table("decoder_encoder", mixed_summary.filter(pl.col("model") == "tiny"), "all")


def test_skip_across_model_sizes_leaves_the_encoders_out(mixed_summary):
    plotted = figures.table("skip_fraction", mixed_summary, "all")
    assert set(plotted["series"]) == {"tiny"}


def test_a_fine_tuned_score_is_stale_when_a_training_setting_differs(tmp_path):
    from painters.glue.finetune import TrainingSettings
    from painters.results import stale_scores

    import json

    path = score_path(tmp_path, "enc", "skip-N1", "rte", 0)
    trained = TrainingSettings(learning_rate=2e-5)
    recorded = {**glue_row("enc", "skip-N1", "rte", "acc", 0.6, 0.5, 0),
                "settings": json.dumps({"dtype": "float32", "training": trained.recorded()})}
    write_atomic(scores_frame([recorded]), path)
    wanted = {"fewshot_seed": None, "limit": None, "bootstrap_iters": None, "dtype": "float32", "max_gen_toks": None}
    assert stale_scores([str(path)], {**wanted, "training": trained.recorded()}) == {}
    stale = stale_scores([str(path)], {**wanted, "training": TrainingSettings(learning_rate=3e-4, mode="frozen").recorded()})
    assert stale[str(path)][0] == ("its model was trained with learning_rate 2e-05, the config asks for 0.03; "
                                   "mode finetune, the config asks for frozen")
    # the other mode's learning rate is not a setting of a score
    assert stale_scores([str(path)], {**wanted, "training": TrainingSettings(frozen_learning_rate=1.0).recorded()}) == {}
