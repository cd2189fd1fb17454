"""LayerShuffle's image data beyond the digits (painters.layershuffle.vision), read as a cluster node
reads it: an image folder, and a Hugging Face data set from the local cache with the network off;
images prepared by the model's own image processor, batch by batch, through DataLoader workers;
training on them resumes exactly; mixed precision; bad input refused before any output; and the
paper-sized config (config/layershuffle.yaml) plans every job without weights or data."""

import json
import shutil
from pathlib import Path

import datasets
import datasets.config
import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from painters import cli
from painters.layershuffle import evaluation, training, vision
from painters.plan import parse
from test_glue_cache import COMMIT
from workflow_helpers import REPO, planned_jobs, planned_scores, snakemake

CLASSES = ("cat", "dog", "fish")
SIZE = 16  # the tiny model's image size


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A model folder as `hf download` leaves one: a tiny ViT (3 layers, 3 classes, with dropout) and its
    image processor (16x16, ImageNet's mean and std), saved with save_pretrained."""
    folder = tmp_path_factory.mktemp("pretrained")
    config = transformers.ViTConfig(image_size=SIZE, patch_size=4, hidden_size=32, num_hidden_layers=3,
                                    num_attention_heads=4, intermediate_size=64, num_labels=len(CLASSES),
                                    hidden_dropout_prob=0.1)
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": SIZE, "width": SIZE}, image_mean=[0.485, 0.456, 0.406],
                                   image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


def picture(seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    size = (int(rng.integers(12, 40)), int(rng.integers(12, 40)))
    return Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """ROOT/train/CLASS/*.png (4 a class; sizes and colour modes vary, one ImageNet-style .JPEG) and
    ROOT/val/CLASS/*.png (2 a class), with a file that is no image."""
    root = tmp_path_factory.mktemp("images")
    for split, per_class in (("train", 4), ("val", 2)):
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                seed = 100 * label + 10 * per_class + i
                mode = ("RGB", "L", "RGBA", "RGB")[i]
                if split == "train" and i == 3:
                    picture(seed).save(folder / f"n0000{label}_{i}.JPEG", format="JPEG")
                else:
                    picture(seed, mode).save(folder / f"{i}.png")
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    return root


def test_an_image_folder_loads_through_the_models_image_processor(image_folder, pretrained):
    data = vision.load_data("imagefolder", data_dir=image_folder, image_processor=pretrained)
    assert data.name == "imagefolder" and data.num_labels == 3 and data.class_names == CLASSES
    assert data.train.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4  # notes.txt is skipped
    assert data.test.labels.tolist() == [0, 0, 1, 1, 2, 2] and data.test.labels.dtype == torch.int64
    pixels = data.train.images([0, 5, 11])
    assert pixels.shape == (3, 3, SIZE, SIZE) and pixels.dtype == torch.float32
    # each image as the processor prepares it on its own (grey and RGBA pictures as RGB)
    processor = transformers.AutoImageProcessor.from_pretrained(pretrained, use_fast=False)
    second_dog = Image.open(image_folder / "train/dog/1.png").convert("RGB")
    expected = processor(second_dog, return_tensors="pt")["pixel_values"][0]
    torch.testing.assert_close(pixels[1], expected, rtol=0, atol=0)  # row 5: dog's second (sorted: 0, 1, 2, n00001_3)
    assert data.image_size == SIZE and data.channels == 3
    test_only = vision.load_data("imagefolder", data_dir=image_folder, image_processor=pretrained, train=False)
    assert test_only.train is None and test_only.test.labels.tolist() == data.test.labels.tolist()


def test_batches_come_the_same_from_workers(image_folder, pretrained):
    split = vision.load_data("imagefolder", data_dir=image_folder, image_processor=pretrained).train
    rows = [torch.tensor([3, 0, 9]), torch.tensor([5, 11])]
    here = list(vision.batches(split, iter(rows)))
    from_a_worker = list(vision.batches(split, iter(rows), workers=1))
    for (images, labels), (worker_images, worker_labels), wanted in zip(here, from_a_worker, rows):
        assert torch.equal(images, worker_images) and torch.equal(labels, worker_labels)
        assert labels.tolist() == split.labels[wanted].tolist()


def write_cifar100_cache(scratch: Path) -> None:
    """What `datasets.load_dataset("uoft-cs/cifar100")` leaves in HF_DATASETS_CACHE, with made-up rows in
    its columns (img, fine_label: 100 classes, coarse_label: 20): uoft-cs___cifar100/cifar100/0.0.0/<commit>/
    with dataset_info.json and cifar100-{train,test}.arrow, prepared by the parquet builder configured as
    load_dataset configures it from the repo's card (config cifar100, a file pattern per split), as
    test_glue_cache does for GLUE; offline, datasets reads this prepared cache, not the hub's files."""
    from datasets.info import DatasetInfosDict
    from datasets.load import (BuilderConfigsParameters, DatasetModule, create_builder_configs_from_metadata_configs,
                               get_dataset_builder_class)
    from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    from datasets.utils.metadata import MetadataConfigs

    features = datasets.Features({"img": datasets.Image(),
                                  "fine_label": datasets.ClassLabel(names=[f"fine{i}" for i in range(100)]),
                                  "coarse_label": datasets.ClassLabel(names=[f"coarse{i}" for i in range(20)])})
    for split, n in (("train", 6), ("test", 4)):
        rows = {"img": [picture(7 * i + len(split)) for i in range(n)],
                "fine_label": [(37 * i + len(split)) % 100 for i in range(n)], "coarse_label": [i % 20 for i in range(n)]}
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(scratch / f"{split}-00000-of-00001.parquet"))
    metadata = MetadataConfigs({"cifar100": {"data_files": [{"split": s, "path": f"{s}-*"} for s in ("train", "test")]}})
    infos = DatasetInfosDict({"cifar100": datasets.DatasetInfo(features=features, config_name="cifar100")})
    module_path = _PACKAGED_DATASETS_MODULES["parquet"][0]
    configs, default = create_builder_configs_from_metadata_configs(module_path, metadata, base_path=str(scratch))
    module = DatasetModule(module_path, COMMIT, {}, BuilderConfigsParameters(metadata, configs, default), dataset_infos=infos)
    builder = get_dataset_builder_class(module, dataset_name="cifar100")(
        cache_dir=str(scratch / "prepare"), config_name="cifar100", hash=COMMIT, info=infos["cifar100"],
        base_path=str(scratch), dataset_name="cifar100")
    builder.download_and_prepare()
    prepared = Path(builder.cache_dir)
    assert prepared == scratch / "prepare/cifar100/cifar100/0.0.0" / COMMIT
    # the repo id only adds the `uoft-cs___` prefix to the folder
    target = Path(datasets.config.HF_DATASETS_CACHE) / "uoft-cs___cifar100" / "cifar100"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(prepared.parents[1], target)


def test_cifar100_is_read_from_the_local_cache_offline(hf_home, tmp_path, pretrained):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    write_cifar100_cache(scratch)
    data = vision.load_data("cifar100", image_processor=pretrained)
    assert data.name == "cifar100" and data.num_labels == 100 and data.class_names[:2] == ("fine0", "fine1")
    assert data.train.labels.tolist() == [(37 * i + 5) % 100 for i in range(6)]  # the fine labels
    assert data.test.labels.tolist() == [(37 * i + 4) % 100 for i in range(4)]
    assert data.test.images([3, 0]).shape == (2, 3, SIZE, SIZE)
    # a data set not in the cache: what was looked for, how to get it, what else to do
    with pytest.raises(FileNotFoundError) as raised:
        vision.load_data("imagenet-1k", image_processor=pretrained)
    message = str(raised.value)
    assert "image data set imagenet-1k: ILSVRC/imagenet-1k (train) is not in the local Hugging Face cache" in message
    assert "datasets.load_dataset('ILSVRC/imagenet-1k')" in message and "--data imagefolder" in message


def quiet(_):
    pass


def test_training_from_a_pretrained_folder_with_a_worker_resumes_exactly(image_folder, pretrained, tmp_path):
    """If this fails, a resumed run reads other batches or draws other dropout than an uninterrupted one
    (the DataLoader must not draw from torch's global generator)."""
    data = vision.load_data("imagefolder", data_dir=image_folder, image_processor=pretrained)
    settings = training.TrainSettings(variant="layershuffle_predict", steps=6, batch_size=4, learning_rate=1e-3,
                                      checkpoint_every=2)
    straight = vision.load_vit(str(pretrained), data.num_labels)
    straight_modules, straight_history = training.train(straight, data.train, settings, log=quiet, workers=1)

    checkpoint = tmp_path / "run.ckpt"
    training.train(vision.load_vit(str(pretrained), data.num_labels), data.train, settings, checkpoint=checkpoint,
                   log=quiet, stop_after=3, workers=1)
    assert torch.load(checkpoint, weights_only=False)["step"] == 2
    resumed = vision.load_vit(str(pretrained), data.num_labels)  # a new process: the model as loaded, then the checkpoint
    modules, history = training.train(resumed, data.train, settings, checkpoint=checkpoint, log=quiet, workers=1)
    assert [step for step, _ in history] == list(range(2, 6))
    assert [loss for _, loss in history] == [loss for step, loss in straight_history if step >= 2]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    for a, b in zip(straight_modules.state_dict().values(), modules.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # the workers change nothing
    here = vision.load_vit(str(pretrained), data.num_labels)
    _, here_history = training.train(here, data.train, settings, log=quiet, workers=0)
    assert here_history == straight_history


def test_a_distilled_deit_is_trained_as_deit_for_image_classification(tmp_path):
    config = transformers.DeiTConfig(image_size=SIZE, patch_size=4, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=64, num_labels=5)
    transformers.DeiTForImageClassificationWithTeacher(config).save_pretrained(tmp_path)  # inference only: no loss
    model = vision.load_vit(str(tmp_path), num_labels=3)
    assert type(model).__name__ == "DeiTForImageClassification" and model.config.num_labels == 3
    assert model(pixel_values=torch.randn(2, 3, SIZE, SIZE), labels=torch.tensor([0, 2])).loss is not None


def test_train_and_score_from_an_image_folder_in_bf16(image_folder, pretrained, tmp_path, capsys):
    out = tmp_path / "models/vit.layershuffle.s0"
    assert cli.main(["train-vision", "--model", str(pretrained), "--data", "imagefolder", "--data-dir", str(image_folder),
                     "--variant", "layershuffle", "--steps", "3", "--batch-size", "4", "--precision", "bf16",
                     "--device", "cpu", "--workers", "1", "--out", str(out)]) == 0
    facts = json.loads((out / "training.json").read_text())
    assert facts["settings"]["precision"] == "bf16"  # how it was trained; not where
    assert not {"device", "workers"} & {*facts, *facts["settings"]}
    assert facts["data"] == "imagefolder" and facts["data_dir"] == str(image_folder.resolve())
    assert (out / "model/preprocessor_config.json").is_file()  # scored on images prepared as in training
    plans = ["baseline", "shuffle_all-S0", "prune-P34-S1"]
    assert cli.main(["evaluate-vision", "--trained", str(out), "--name", "vit.layershuffle.s0", "--plans", *plans,
                     "--out", str(tmp_path / "results"), "--workers", "1", "--device", "cpu"]) == 0
    import polars as pl

    model, modules, _ = evaluation.load_trained(out)
    test = evaluation.trained_data(out, facts).test
    expected = training.accuracies(model, modules, [parse(key) for key in plans], test, precision="bf16")
    for key, accuracy in zip(plans, expected):
        frame = pl.read_parquet(tmp_path / f"results/scores/vit.layershuffle.s0/{key}/imagefolder.parquet")
        assert frame["value"].to_list() == [accuracy] and frame["n_samples"][0] == 6 and frame["device"][0] == "cpu"
        assert json.loads(frame["settings"][0])["training"]["precision"] == "bf16"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--data", "mnist"], "unknown image data set 'mnist'; valid: digits, imagenet-1k, cifar100, imagefolder"),
        (["--model", "{pretrained}", "--data", "imagefolder", "--data-dir", "{tmp}/nowhere"],
         "image folder {tmp}/nowhere: no train folder (expected {tmp}/nowhere/train/CLASS/*.jpg|png"),
        (["--data", "imagefolder", "--data-dir", "{images}"], "image data set imagefolder: its images are prepared by"),
        (["--data", "cifar100", "--data-dir", "{images}"], "--data-dir is the folder of --data imagefolder, not of cifar100"),
        (["--model", "{pretrained}", "--layers", "5", "--data", "imagefolder", "--data-dir", "{images}"],
         "--layers 5: {pretrained} has 3 layers"),
        (["--precision", "fp16", "--device", "cpu"], "precision fp16 needs a CUDA GPU, and this runs on cpu: use bf16 or fp32"),
        (["--precision", "fp8"], "unknown precision 'fp8'; valid: fp32, bf16, fp16"),
        (["--workers", "-1"], "--workers -1 must be >= 0"),
        pytest.param(["--device", "cuda"], "--device cuda: there is no CUDA GPU here",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is here")),
    ],
)
def test_bad_input_is_refused_before_any_output(arguments, message, image_folder, pretrained, tmp_path, capsys):
    out = tmp_path / "models/x"
    fill = {"{pretrained}": str(pretrained), "{images}": str(image_folder), "{tmp}": str(tmp_path)}
    for key, value in fill.items():
        arguments = [a.replace(key, value) for a in arguments]
        message = message.replace(key, value)
    assert cli.main(["train-vision", *arguments, "--steps", "2", "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not training.checkpoint_beside(out).exists()


def test_the_paper_sized_config_validates_and_plans_every_job(tmp_path):
    """config/layershuffle.yaml plans without weights or data here: two base models x five variants x five
    seeds, and seeds 5-11 of sequential and LayerShuffle for the merges, each trained by one job and scored
    by one under 54 plans (in order, 5 random orders, 1..6 of 12 layers pruned in order or shuffled, 3 seeds
    each, each layer skipped); 100 merges and the ensemble of each merged variant under 6 plans; a UMAP
    of each variant's seed 0."""
    result = snakemake(tmp_path, "-n", "-p", "--configfile", str(REPO / "config/layershuffle.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = planned_jobs(result)
    trained = 2 * (5 * 5 + 2 * 7)
    trainings = sum(count for rule, count in jobs.items() if rule.startswith("train_vision_"))
    assert trainings == trained and jobs["evaluate"] == trained
    assert sum(count for rule, count in jobs.items() if rule.startswith("merge_vision_")) == 2 * 2
    assert jobs["umap_vision"] == 2 * 5
    assert len(planned_scores(result)) == trained * (1 + 5 + 6 * 3 * 2 + 12) + 2 * 2 * 101 * 6
    for figure in ("order", "pruning", "merging", "umap", "layers"):
        assert jobs[f"figure_layershuffle_{figure}"] == 2
    text = result.stdout + result.stderr
    command = next(line for line in text.splitlines() if "painters train-vision" in line and "vit-b16.layershuffle.s0" in line)
    assert "--model google/vit-base-patch16-224 --layers 12" in command and "--data imagenet-1k" in command
    assert "--precision bf16" in command and "--workers 8" in command and "--device" not in command  # a GPU job
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"data": "cifar100", "base_models": {"vit": {"model": "tiny"}}},
         "layershuffle.base_models.vit: model tiny and data cifar100 do not go together"),
        ({"base_models": {"vit": {"model": "org/never-downloaded"}}},
         "layershuffle.base_models.vit: no config.json of 'org/never-downloaded'"),
    ],
)
def test_layershuffle_config_errors_name_the_key(tmp_path, changes, message):
    import yaml

    config = yaml.safe_load((REPO / "config/layershuffle.yaml").read_text())
    config["layershuffle"].update(changes)
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", "--configfile", str(configfile))
    assert result.returncode != 0 and message in result.stdout + result.stderr, (result.stdout + result.stderr)[-2000:]
