"""LayerShuffle training mechanics (painters.layershuffle.training) on a tiny ViT and the digits:
the plan each batch runs, the position embedding and prediction, and kill-and-resume."""

import torch
import pytest

from painters import surgery
from painters.layershuffle import training, vision
from painters.plan import Plan, parse

DEPTH = 4


@pytest.fixture(scope="module")
def data():
    return vision.load_digits(0)


def tiny(data, seed=0):
    return vision.tiny_vit(data, layers=DEPTH, hidden=32, heads=4, seed=seed)


def test_layershuffle_runs_every_layer_once_in_a_new_order_per_batch():
    orders = [training.batch_plan("layershuffle", 6, seed=0, step=step).schedule(6) for step in range(50)]
    assert all(sorted(i for (i,) in order) == list(range(6)) for order in orders)
    assert len(set(orders)) > 40  # a new draw per batch (6! = 720 orders)
    assert training.batch_plan("layershuffle", 6, 0, 7) == training.batch_plan("layershuffle", 6, 0, 7)  # resumable
    assert training.batch_plan("layershuffle", 6, 1, 7) != training.batch_plan("layershuffle", 6, 0, 7)
    assert training.batch_plan("sequential", 6, 0, 3).key == "baseline"


def test_layerdrop_drops_each_layer_with_its_probability_and_keeps_the_order():
    kept = [training.batch_plan("layerdrop", 10, seed=0, step=step, layerdrop=0.2).schedule(10) for step in range(2000)]
    assert all([i for (i,) in order] == sorted(i for (i,) in order) for order in kept)
    share_dropped = 1 - sum(len(order) for order in kept) / (10 * len(kept))
    assert 0.18 < share_dropped < 0.22


def test_each_epoch_visits_every_row_once():
    rows = torch.cat([training.batch_indices(100, 10, seed=0, step=step) for step in range(10)])
    assert sorted(rows.tolist()) == list(range(100))
    assert not torch.equal(training.batch_indices(100, 10, 0, 0), training.batch_indices(100, 10, 0, 10))


def test_the_position_embedding_enters_each_layer_at_its_current_position(data):
    """If this fails, a layer gets another position's embedding or another layer's projection."""
    model = tiny(data)
    modules = training.position_modules(model, training.TrainSettings(variant="layershuffle_position"))
    torch.nn.init.normal_(modules.embedding.weight)  # zero at first: make the positions differ
    plan = Plan(variant="order", order=((2,), (0,), (3,), (1,)))
    images = data.test.images(range(5))
    model.eval()
    with torch.no_grad():
        logits, _ = training.forward(model, modules, plan, images)
        # by hand, the layers called in the plan's order
        hidden = model.vit.embeddings(images)
        for position, (layer,) in enumerate(plan.order):
            embedding = modules.embedding.weight[position].expand(*hidden.shape[:-1], -1)
            hidden = hidden + modules.projections[layer](torch.cat([hidden, embedding], dim=-1))
            hidden = surgery.output_state(model.vit.layers[layer](hidden))
        expected = model.classifier(model.vit.layernorm(hidden)[:, 0])
        torch.testing.assert_close(logits, expected)
        plain, _ = training.forward(model, None, plan, images)
    assert not torch.allclose(plain, logits)  # the hooks did something


def test_position_prediction_adds_the_cross_entropy_of_every_call(data):
    model = tiny(data)
    modules = training.position_modules(model, training.TrainSettings(variant="layershuffle_predict"))
    plan = Plan(variant="order", order=((3,), (1,), (0,), (2,)))
    images, labels = data.train.images(range(8)), data.train.labels[:8]
    with training.positions(model, None, plan) as none:
        pass
    assert none == []
    with torch.no_grad(), surgery.apply(model, plan), training.positions(model, modules, plan) as predicted:
        output = model(pixel_values=images, labels=labels)
    assert [position for _, position in predicted] == [0, 1, 2, 3]
    targets = torch.arange(DEPTH).repeat_interleave(8)
    expected = output.loss + torch.nn.functional.cross_entropy(torch.cat([p for p, _ in predicted]), targets)
    with torch.no_grad():
        _, loss = training.forward(model, modules, plan, images, labels)
    torch.testing.assert_close(loss, expected)
    # each prediction comes from the head of the layer at that position (layer 3 first)
    with torch.no_grad(), surgery.apply(model, plan):
        first = surgery.output_state(surgery.layer_list(model)[0](model.vit.embeddings(images)))
    torch.testing.assert_close(predicted[0][0], modules.heads[3](first.mean(dim=1)))


@pytest.mark.parametrize("variant", ["layershuffle_position", "layerdrop"])
def test_a_killed_run_resumes_from_its_checkpoint_and_ends_where_an_uninterrupted_one_does(data, tmp_path, variant):
    settings = training.TrainSettings(variant=variant, steps=12, batch_size=32, learning_rate=2e-3, checkpoint_every=4)
    straight = tiny(data)
    straight_modules, straight_history = training.train(straight, data.train, settings, log=lambda _: None)

    checkpoint = tmp_path / "run.ckpt"
    killed = tiny(data)
    training.train(killed, data.train, settings, checkpoint=checkpoint, log=lambda _: None, stop_after=6)
    assert torch.load(checkpoint, weights_only=False)["step"] == 4  # the last checkpoint before the kill
    lines = []
    resumed = tiny(data)  # a new process: the model as built, then the checkpoint
    modules, history = training.train(resumed, data.train, settings, checkpoint=checkpoint, log=lines.append)
    assert lines[0].startswith("resumed from the checkpoint of step 4")
    assert [step for step, _ in history] == list(range(4, 12))
    assert [loss for _, loss in history] == [loss for step, loss in straight_history if step >= 4]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    if straight_modules is not None:
        for a, b in zip(straight_modules.state_dict().values(), modules.state_dict().values()):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_sequential_model_learns_the_digits_and_loses_them_in_random_order(data):
    torch.manual_seed(0)
    model = tiny(data)
    settings = training.TrainSettings(variant="sequential", steps=400, batch_size=64, learning_rate=3e-3)
    modules, _ = training.train(model, data.train, settings, log=lambda _: None)
    in_order = training.accuracy(model, modules, training.BASELINE, data.test)
    shuffled = [training.accuracy(model, modules, training.batch_plan("layershuffle", DEPTH, 5, k), data.test)
                for k in range(4)]
    assert in_order > 0.8
    assert sum(shuffled) / len(shuffled) < in_order - 0.2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="unknown training variant 'shuffle'; valid: sequential, layershuffle"):
        training.TrainSettings(variant="shuffle").check()
    with pytest.raises(ValueError, match="layerdrop 1.0 must be in"):
        training.TrainSettings(variant="layerdrop", layerdrop=1.0).check()


def test_a_killed_training_job_leaves_no_model_and_its_rerun_resumes(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "models/layershuffle-s0"
    command = [sys.executable, "-m", "painters", "train-vision", "--variant", "layershuffle", "--layers", "4",
               "--hidden", "32", "--steps", "400", "--checkpoint-every", "20", "--threads", "1", "--out", str(out)]
    checkpoint = training.checkpoint_beside(out)
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and time.monotonic() < deadline and job.poll() is None:
        time.sleep(0.2)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    assert checkpoint.exists(), job.stdout.read()
    assert not out.exists()  # nothing that looks finished
    step = torch.load(checkpoint, weights_only=False)["step"]
    assert step >= 20 and step % 20 == 0
    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"resumed from the checkpoint of step {step}" in rerun.stdout
    assert (out / "model/config.json").is_file() and (out / "training.json").is_file()
    assert not checkpoint.exists()


def test_a_checkpoint_of_other_settings_is_refused(data, tmp_path):
    checkpoint = tmp_path / "run.ckpt"
    settings = training.TrainSettings(variant="layerdrop", steps=4, batch_size=16, checkpoint_every=2)
    training.train(tiny(data), data.train, settings, checkpoint=checkpoint, log=lambda _: None,
                   stop_after=2)
    other = training.TrainSettings(variant="layerdrop", steps=4, batch_size=16, checkpoint_every=2, layerdrop=0.3)
    with pytest.raises(ValueError, match="other settings \\(layerdrop differ\\); delete it"):
        training.train(tiny(data), data.train, other, checkpoint=checkpoint, log=lambda _: None)


def test_a_trained_model_is_scored_under_every_plan_as_it_was_trained(data, tmp_path, capsys):
    """If this fails, a saved model (or its position modules) reloads as another model, or its scores
    do not reach the workflow's score files."""
    import polars as pl

    from painters import cli
    from painters.layershuffle import evaluation

    settings = training.TrainSettings(variant="layershuffle_position", steps=30, batch_size=32, learning_rate=2e-3)
    model = tiny(data)
    modules, _ = training.train(model, data.train, settings, log=lambda _: None)
    folder = tmp_path / "trained"
    training.save_trained(folder, model, modules, settings, {"data": "digits", "data_seed": 0})
    plans = ["baseline", "shuffle_all-S0", "prune-P25-S1", "reverse-N0"]
    assert cli.main(["evaluate-vision", "--trained", str(folder), "--name", "vit.pos.s0", "--plans", *plans,
                     "--out", str(tmp_path / "results")]) == 0
    loaded, loaded_modules, _ = evaluation.load_trained(folder)
    for key in plans:
        frame = pl.read_parquet(tmp_path / f"results/scores/vit.pos.s0/{key}/digits.parquet")
        plan = parse(key)
        expected = training.accuracy(model, modules, plan, data.test)
        assert frame["value"].to_list() == [expected]
        assert training.accuracy(loaded, loaded_modules, plan, data.test) == expected
        assert frame["random_baseline"][0] == pytest.approx(max(torch.bincount(data.test.labels)).item() / len(data.test))
    assert cli.main(["evaluate-vision", "--trained", str(folder), "--name", "x", "--plans", "skip-N2",
                     "--out", str(tmp_path / "results")]) == 2
    assert "plan skip-N2 does not fit this 4-layer model" in capsys.readouterr().err
    assert cli.main(["evaluate-vision", "--trained", str(tmp_path), "--name", "x", "--plans", "baseline",
                     "--out", str(tmp_path / "results")]) == 2
    assert "not a trained model folder" in capsys.readouterr().err
