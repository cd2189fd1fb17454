"""The LayerShuffle study's plan grid, trained-model names and figure tables (synthetic scores)."""

from datetime import datetime, timezone

import polars as pl
import pytest

from painters import aggregate, figures, plan
from painters.layershuffle import study
from painters.results import SCORE_COLUMNS, score_path, scores_frame, write_atomic

SETTINGS = {"base_models": {"vit": {"model": "tiny"}}, "variants": ["sequential", "layershuffle"], "seeds": [0, 1],
            "evaluation": {"order_seeds": [0, 1], "pruned": [1, 2], "prune_seeds": [0], "plans": ["skip_layer-L1", "skip_layer-L4", "switch-L1"]},
            "merging": {"variants": ["layershuffle"], "seeds": [0, 1, 2], "merges": 2, "seed": 0}}


def test_a_trained_models_name_says_its_base_variant_and_seed():
    names = [m.name for m in study.trained_models(SETTINGS)]
    # the merged variant's seed 2 is trained for its merges
    assert names == ["vit.layershuffle.s0", "vit.layershuffle.s1", "vit.layershuffle.s2", "vit.sequential.s0", "vit.sequential.s1"]
    assert study.parse_trained_name("my.vit.layershuffle_position.s12") == study.TrainedModel("my.vit", "layershuffle_position", 12)
    assert study.parse_trained_name("llama2-7b") is None and study.parse_trained_name("vit.shuffle.s0") is None
    assert study.parse_trained_name("vit.layershuffle.m0") is None


def test_merged_models_and_ensembles_are_named_per_merged_variant():
    combined = study.combined_models(SETTINGS)
    assert [m.name for m in combined] == ["vit.layershuffle.m0", "vit.layershuffle.m1", "vit.layershuffle.ensemble"]
    assert [study.parse_combined_name(m.name) for m in combined] == combined
    assert study.parse_combined_name("vit.layershuffle.s0") is None and study.parse_combined_name("a.b.ensemble") is None
    assert [m.name for m in study.merge_sources(SETTINGS, "vit", "layershuffle")] == [f"vit.layershuffle.s{s}" for s in (0, 1, 2)]
    assert study.merge_plans(SETTINGS) == ["baseline", "shuffle_all-S0", "shuffle_all-S1"]
    assert study.combined_models({**SETTINGS, "merging": {}}) == []


@pytest.mark.parametrize("depth", [6, 12, 24])
def test_the_pruning_grid_drops_exactly_k_layers(depth):
    for k in range(1, depth):
        dropped = depth - len(plan.parse(f"prune-P{study.percent_pruning(k, depth)}-S0").schedule(depth))
        assert dropped == k


def test_the_evaluation_grid():
    keys = study.evaluation_plans({**SETTINGS, "evaluation": {**SETTINGS["evaluation"], "plans": ["skip_layer-L2"]}}, 6)
    assert keys == ["baseline", "shuffle_all-S0", "shuffle_all-S1", "prune-P17-S0", "shuffle_prune-P17-S0", "prune-P33-S0",
                    "shuffle_prune-P33-S0", "skip_layer-L2"]
    with pytest.raises(ValueError, match=r"pruned \[6\]: a 6-layer model can have 1\.\.5 layers pruned"):
        study.evaluation_plans({**SETTINGS, "evaluation": {**SETTINGS["evaluation"], "pruned": [6]}}, 6)


def accuracy_of(variant, seed, key):
    """Made-up accuracies: the sequential model collapses when shuffled, LayerShuffle holds."""
    p = plan.parse(key)
    shuffled = p.variant in ("shuffle_all", "shuffle_prune")
    base = {"sequential": 0.9 if not shuffled else 0.2, "layershuffle": 0.8}[variant]
    return base - 0.05 * (6 - len(p.schedule(6))) + 0.01 * seed + 0.001 * (p.seed or 0)


def combined_accuracy(merge, key):
    """Made-up: a merge of LayerShuffle models a little below a single one, the ensemble above."""
    return (0.9 if merge is None else 0.7 + 0.02 * merge) + 0.001 * (plan.parse(key).seed or 0)


def write_score(folder, name, key, value):
    p = plan.parse(key)
    row = {column: None for column in SCORE_COLUMNS}
    row.update(model=name, plan=key, variant=p.variant, seed=p.seed, percent=p.percent, layer=p.layer, num_layers=6, benchmark="digits",
               metric="acc", filter="none", value=value, higher_is_better=True, random_baseline=0.1,
               timestamp=datetime.now(timezone.utc))
    write_atomic(scores_frame([row]), score_path(folder, name, key, "digits"))


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ls")
    for trained in study.trained_models(SETTINGS):
        for key in study.evaluation_plans(SETTINGS, 6):
            write_score(folder, trained.name, key, accuracy_of(trained.variant, trained.seed, key))
    for combined in study.combined_models(SETTINGS):
        for key in study.merge_plans(SETTINGS):
            write_score(folder, combined.name, key, combined_accuracy(combined.merge, key))
    return aggregate.summarize(aggregate.read_scores(folder / "scores"))


def test_the_order_figure_averages_order_seeds_then_training_seeds(summary):
    plotted = figures.table("layershuffle_order", summary, "vit")
    assert set(plotted["variant"]) == {"sequential", "layershuffle"}  # single trained models only
    point = plotted.filter((pl.col("variant") == "sequential") & (pl.col("series") == "random order")).row(0, named=True)
    per_seed = [sum(accuracy_of("sequential", seed, f"shuffle_all-S{s}") for s in (0, 1)) / 2 for seed in (0, 1)]
    assert point["y"] == pytest.approx(sum(per_seed) / 2)
    assert point["y_low"] == pytest.approx(accuracy_of("sequential", 0, "shuffle_all-S0"))
    assert point["y_high"] == pytest.approx(accuracy_of("sequential", 1, "shuffle_all-S1"))
    assert point["seeds"] == "0;1"
    in_order = plotted.filter((pl.col("variant") == "layershuffle") & (pl.col("series") == "layers in order"))["y"][0]
    assert in_order == pytest.approx(sum(accuracy_of("layershuffle", seed, "baseline") for seed in (0, 1, 2)) / 3)


def test_the_merging_figure_compares_single_merged_and_ensemble_per_order(summary, tmp_path):
    plotted = figures.table("layershuffle_merging", summary, "vit")
    assert set(plotted["variant"]) == {"layershuffle"}  # the merged variant only
    point = {(r["series"], r["x"]): r for r in plotted.iter_rows(named=True)}
    x_in_order, x_random = 2.0, 3.0  # layershuffle is the second training variant
    assert point[("merged", x_in_order)]["y"] == pytest.approx((combined_accuracy(0, "baseline") + combined_accuracy(1, "baseline")) / 2)
    assert point[("merged", x_random)]["y_low"] == pytest.approx(combined_accuracy(0, "shuffle_all-S0"))
    assert point[("ensemble", x_random)]["y"] == pytest.approx(sum(combined_accuracy(None, f"shuffle_all-S{s}") for s in (0, 1)) / 2)
    single = sum(accuracy_of("layershuffle", seed, "baseline") for seed in (0, 1, 2)) / 3
    assert point[("single", x_in_order)]["y"] == pytest.approx(single) and point[("single", x_in_order)]["seeds"] == "0;1;2"
    png, _ = figures.save_atomic(figures.draw("layershuffle_merging", summary, "vit"), tmp_path / "merging.png", dpi=50)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_pruning_figure_has_a_line_per_variant_and_order_over_k(summary, tmp_path):
    plotted = figures.table("layershuffle_pruning", summary, "vit")
    assert set(plotted["series"]) == {f"{v}, {o}" for v in ("sequential", "layershuffle") for o in ("in order", "shuffled")}
    line = plotted.filter(pl.col("series") == "sequential, shuffled").sort("x")
    assert line["x"].to_list() == [0, 1, 2]  # shuffle_all at 0 pruned, then shuffle_prune
    assert line["y"][2] == pytest.approx(sum(accuracy_of("sequential", s, "shuffle_prune-P33-S0") for s in (0, 1)) / 2)
    for figure in ("layershuffle_order", "layershuffle_pruning"):
        fig = figures.draw(figure, summary, "vit")
        png, _ = figures.save_atomic(fig, tmp_path / f"{figure}.png", dpi=50)
        assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="scores of models trained from other"):
        figures.table("layershuffle_order", summary, "other")


@pytest.mark.parametrize("figure", ["layershuffle_order", "layershuffle_pruning", "layershuffle_layers"])
def test_captions_name_the_data_and_the_training_seeds(summary, tmp_path, figure):
    from pathlib import Path
    from types import SimpleNamespace

    from jinja2 import Environment

    csv = tmp_path / f"{figure}.csv"
    aggregate.write_csv_atomic(figures.table(figure, summary, "vit"), csv)
    snakemake = SimpleNamespace(params=SimpleNamespace(plotted=figures.PlottedFacts(csv), limit=None),
                                wildcards=SimpleNamespace(model="vit"), config={})
    caption = Path(__file__).parent.parent / "workflow/report" / f"{figure}.rst"
    text = Environment().from_string(caption.read_text()).render(snakemake=snakemake)
    assert "Base model ``vit``; data: digits; training seeds: 0, 1, 2." in text


def test_the_layers_figure_has_skip_and_switch_lines_per_training_variant(summary, tmp_path):
    plotted = figures.table("layershuffle_layers", summary, "vit")
    assert set(plotted["series"]) == {f"{v}, {p}" for v in ("sequential", "layershuffle") for p in ("skip layer", "switch")}
    line = plotted.filter(pl.col("series") == "sequential, skip layer").sort("x")
    assert line["x"].to_list() == [1, 4]
    assert line["y"][1] == pytest.approx(sum(accuracy_of("sequential", s, "skip_layer-L4") for s in (0, 1)) / 2)
    png, _ = figures.save_atomic(figures.draw("layershuffle_layers", summary, "vit"), tmp_path / "layers.png", dpi=50)
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_the_merging_caption_names_the_models_and_merges(summary, tmp_path):
    from pathlib import Path
    from types import SimpleNamespace

    from jinja2 import Environment

    csv = tmp_path / "layershuffle_merging.csv"
    aggregate.write_csv_atomic(figures.table("layershuffle_merging", summary, "vit"), csv)
    snakemake = SimpleNamespace(params=SimpleNamespace(plotted=figures.PlottedFacts(csv), limit=None),
                                wildcards=SimpleNamespace(model="vit"), config={})
    caption = Path(__file__).parent.parent / "workflow/report/layershuffle_merging.rst"
    text = Environment().from_string(caption.read_text()).render(snakemake=snakemake)
    assert "Base model ``vit``; data: digits; trained models and merges: 0, 1, 2." in text


def test_a_score_of_a_model_trained_from_another_base_or_data_is_stale():
    import json

    from painters.results import stale_reason

    base = study.trained_from("tiny", "digits", 0, None, 6, 64)
    assert study.trained_from("google/vit-base-patch16-224", "imagenet-1k", 0, layers=12, hidden=768) == {
        "model": "google/vit-base-patch16-224", "data": "imagenet-1k", "data_seed": 0, "data_dir": None}
    recorded = {"settings": json.dumps({"dtype": "float32", "training": {"steps": 30}, "trained_from": base})}
    wanted = {"fewshot_seed": None, "limit": None, "bootstrap_iters": None, "dtype": "float32", "max_gen_toks": None,
              "training": {"steps": 30}}
    assert stale_reason(recorded, {**wanted, "trained_from": base}) is None
    assert stale_reason(recorded, {**wanted, "trained_from": study.trained_from("tiny", "digits", 0, None, 6, 32)}) == \
        "its model was trained from hidden 64, the config asks for 32"
    assert stale_reason(recorded, {**wanted, "trained_from": study.trained_from("tiny", "digits", 1, None, 6, 64)}) == \
        "its model was trained from data_seed 0, the config asks for 1"
    # a score written before painters recorded it is taken as unchanged, as any unrecorded setting
    unrecorded = {"settings": json.dumps({"dtype": "float32", "training": {"steps": 30}})}
    assert stale_reason(unrecorded, {**wanted, "trained_from": base}) is None
