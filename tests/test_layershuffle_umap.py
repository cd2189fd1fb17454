"""UMAP of layer outputs (painters.layershuffle.layer_umap): which position each output is labelled
with, the outputs themselves, the seeded fit, the CLI and the figure."""

import numpy as np
import polars as pl
import pytest
import torch

from painters import cli, figures, surgery
from painters.layershuffle import layer_umap, study, training, vision
from painters.plan import parse

DEPTH = 4


@pytest.fixture(scope="module")
def data():
    return vision.load_digits(0)


@pytest.fixture(scope="module")
def model(data):
    return vision.tiny_vit(data, layers=DEPTH, hidden=16, heads=2, seed=0).eval()


def token_means(states):
    return np.stack([state.mean(dim=1).numpy() for state in states])


def test_each_output_is_labelled_with_the_position_it_ran_at(data, model):
    images = data.test.images(range(5))
    plan = parse("shuffle_all-S1")
    labels, outputs = layer_umap.collect(model, None, [plan], images, batch_size=2)
    ran = surgery.called_layers(plan.schedule(DEPTH))
    assert ran != list(range(DEPTH))  # a real shuffle
    assert labels["layer"].to_list() == [layer for layer in ran for _ in range(5)]
    assert labels["position"].to_list() == [position for position in range(DEPTH) for _ in range(5)]
    assert labels["image"].to_list() == list(range(5)) * DEPTH and set(labels["order_seed"]) == {1}
    # the output of each step of the plan, computed apart (surgery.hidden_states: the stack's input first)
    expected = token_means(surgery.hidden_states(model, plan, pixel_values=images)[1:])
    np.testing.assert_allclose(outputs, expected.reshape(DEPTH * 5, -1), atol=1e-5)


def test_in_order_the_outputs_are_the_models_hidden_states(data, model):
    images = data.test.images(range(3))
    labels, outputs = layer_umap.collect(model, None, [parse("baseline")], images)
    assert labels["layer"].to_list() == labels["position"].to_list()
    with torch.no_grad():
        states = model(pixel_values=images, output_hidden_states=True).hidden_states[1:]
    np.testing.assert_allclose(outputs, token_means(states).reshape(DEPTH * 3, -1), atol=1e-5)


def test_the_position_modules_run_and_a_parallel_plan_is_refused(data, model):
    images = data.test.images(range(3))
    plan = parse("shuffle_all-S0")
    modules = training.position_modules(model, training.TrainSettings(variant="layershuffle_position"))
    torch.nn.init.normal_(modules.embedding.weight)
    plain, _ = layer_umap.layer_outputs(model, None, plan, images)
    encoded, layers = layer_umap.layer_outputs(model, modules, plan, images)
    assert layers == surgery.called_layers(plan.schedule(DEPTH)) and not np.allclose(plain, encoded)
    with pytest.raises(ValueError, match="runs layers in parallel"):
        layer_umap.layer_outputs(model, None, parse("parallel-N0"), images)


def test_the_embedding_has_a_row_per_output_and_is_the_same_for_the_same_seed():
    outputs = np.random.default_rng(0).normal(size=(60, 8)).astype(np.float32)
    first = layer_umap.embed(outputs, n_neighbors=5, n_epochs=30, seed=0)
    assert first.shape == (60, 2) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, layer_umap.embed(outputs, n_neighbors=5, n_epochs=30, seed=0))
    assert not np.allclose(first, layer_umap.embed(outputs, n_neighbors=5, n_epochs=30, seed=1))
    with pytest.raises(ValueError, match="needs more outputs than neighbours"):
        layer_umap.embed(outputs[:5], n_neighbors=5)


def test_the_share_of_neighbours_at_the_same_position():
    grouped = pl.DataFrame({"x": [0.0, 0.1, 0.2, 10.0, 10.1, 10.2], "y": [0.0] * 6, "position": [0, 0, 0, 1, 1, 1]})
    assert layer_umap.same_share(grouped, "position", neighbours=2).to_list() == [1.0] * 6
    mixed = grouped.with_columns(pl.Series("position", [0, 1, 0, 1, 0, 1]))
    assert layer_umap.same_share(mixed, "position", neighbours=2).to_list() == [0.5, 0.0, 0.5, 0.5, 0.0, 0.5]


@pytest.fixture(scope="module")
def trained(data, model, tmp_path_factory):
    settings = training.TrainSettings(variant="layershuffle_position")
    modules = training.position_modules(model, settings)
    folder = tmp_path_factory.mktemp("umap") / "vit.layershuffle_position.s0"
    training.save_trained(folder, model, modules, settings, {"data": "digits", "data_seed": 0})
    return folder


def umap_vision(folder, out, *more):
    return cli.main(["umap-vision", "--trained", str(folder), "--name", "vit.layershuffle_position.s0", "--images", "10",
                     "--n-neighbors", "5", "--n-epochs", "30", "--out", str(out), *more])


def test_the_cli_writes_one_row_per_image_and_layer_call(data, trained, tmp_path):
    out = tmp_path / "umap/vit.layershuffle_position.s0.parquet"
    assert umap_vision(trained, out, "--plans", "shuffle_all-S0", "shuffle_all-S1") == 0
    frame = pl.read_parquet(out)
    assert len(frame) == 2 * DEPTH * 10
    assert frame.group_by("plan", "image").len()["len"].to_list() == [DEPTH] * 20
    row = frame.row(0, named=True)
    assert (row["model"], row["base"], row["training"], row["train_seed"], row["data"]) == (
        "vit.layershuffle_position.s0", "vit", "layershuffle_position", 0, "digits")
    assert frame.filter(pl.col("image") == 3)["label"].unique().to_list() == [int(data.test.labels[3])]
    for key in ("shuffle_all-S0", "shuffle_all-S1"):
        by_position = frame.filter(pl.col("plan") == key).group_by("position").agg(pl.col("layer").unique()).sort("position")
        assert [layers[0] for layers in by_position["layer"]] == surgery.called_layers(parse(key).schedule(DEPTH))
    assert umap_vision(trained, tmp_path / "again.parquet", "--plans", "shuffle_all-S0", "shuffle_all-S1") == 0
    assert pl.read_parquet(tmp_path / "again.parquet").equals(frame)  # seeded: the same points


@pytest.mark.parametrize("trained_folder, plans, message", [
    (None, ["shuffle_all-S0"], "not a trained model folder"),
    ("trained", ["shuffle_all-X"], "shuffle_all-X"),
    ("trained", ["skip_layer-L7"], "does not fit this 4-layer model"),
    ("trained", ["parallel-N0"], "runs layers in parallel"),
])
def test_bad_input_exits_2_and_writes_nothing(trained, tmp_path, capsys, trained_folder, plans, message):
    out = tmp_path / "out.parquet"
    assert umap_vision(trained if trained_folder else tmp_path, out, "--plans", *plans) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.glob(".out.parquet*"))


def points(training_variant, positions_apart):
    """Made-up UMAP points of a 3-layer model: positions far apart, or all in one cloud."""
    rng = np.random.default_rng(0)
    position = np.repeat(np.arange(3), 20)
    x = rng.normal(size=60) + (100 * position if positions_apart else 0)
    return pl.DataFrame({
        "model": f"vit.{training_variant}.s0", "base": "vit", "training": training_variant, "train_seed": 0, "data": "digits",
        "plan": "shuffle_all-S0", "order_seed": 0, "image": np.tile(np.arange(20), 3), "label": 1, "layer": (position + 1) % 3,
        "position": position, "x": x, "y": rng.normal(size=60)})


def test_the_figure_has_a_panel_per_variant_and_says_how_points_group(tmp_path):
    umap_frame = pl.concat([points("layershuffle", False), points("sequential", True)])
    fig, plotted = figures.render("layershuffle_umap", pl.DataFrame(), "vit", umap_frame=umap_frame)
    assert plotted["training"].unique(maintain_order=True).to_list() == ["sequential", "layershuffle"]  # VARIANTS' order
    assert len(plotted) == 120 and plotted.filter(pl.col("training") == "sequential")["same_position"].min() == 1.0
    assert plotted.filter(pl.col("training") == "layershuffle")["same_position"].mean() < 0.6
    assert [ax.get_title().split("\n")[0] for ax in fig.axes[:2]] == ["sequential", "layershuffle"]
    png, _ = figures.save_atomic(fig, tmp_path / "layershuffle_umap.png", dpi=40)
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="needs --umap"):
        figures.table("layershuffle_umap", pl.DataFrame(), "vit")
    with pytest.raises(ValueError, match="UMAP points of models trained from other"):
        figures.table("layershuffle_umap", pl.DataFrame(), "other", umap_frame=umap_frame)


def test_the_caption_names_the_data_seeds_images_and_orders(tmp_path):
    from pathlib import Path
    from types import SimpleNamespace

    from jinja2 import Environment

    from painters import aggregate

    csv = tmp_path / "layershuffle_umap.csv"
    aggregate.write_csv_atomic(figures.table("layershuffle_umap", pl.DataFrame(), "vit", umap_frame=points("layershuffle", False)), csv)
    snakemake = SimpleNamespace(params=SimpleNamespace(plotted=figures.PlottedFacts(csv)), wildcards=SimpleNamespace(model="vit"),
                                config={"layershuffle": {"umap": {"images": 200, "order_seeds": [0, 1, 2]}}})
    caption = Path(__file__).parent.parent / "workflow/report/layershuffle_umap.rst"
    text = Environment().from_string(caption.read_text()).render(snakemake=snakemake)
    assert "Base model ``vit``; data: digits; training seeds: 0; 200 test images in 3 random orders." in text


def test_the_models_that_get_a_umap():
    settings = {"base_models": {"vit": {}}, "variants": ["sequential", "layershuffle"], "seeds": [0, 1],
                "umap": {"seeds": [1], "order_seeds": [0, 2]}}
    assert [m.name for m in study.umap_models(settings)] == ["vit.layershuffle.s1", "vit.sequential.s1"]
    assert study.umap_plans(settings) == ["shuffle_all-S0", "shuffle_all-S2"]
    assert study.umap_models({**settings, "umap": {"seeds": []}}) == []
    with pytest.raises(ValueError, match=r"layershuffle.umap.seeds \[2\]: not among layershuffle.seeds"):
        study.umap_models({**settings, "umap": {"seeds": [1, 2]}})
