"""Image classification data and ViT models for the LayerShuffle study.

Data sets (`load_data`), each a train and a test split:

- `digits`: scikit-learn's 8x8 handwritten digits (shipped with the package: 1,797 images, 10
  classes), in memory, split into train and test by a permutation drawn from the data seed; for the
  tiny ViT of the demo and the tests;
- `imagenet-1k` (`ILSVRC/imagenet-1k`, train and validation: the paper's) and `cifar100`
  (`uoft-cs/cifar100`, train and test, the 100 fine labels), from the local Hugging Face datasets
  cache (downloaded where there is internet; jobs run offline);
- `imagefolder`: DATA_DIR/train/CLASS/*.jpg|png and DATA_DIR/val (or validation, test)/CLASS/...,
  torchvision's ImageFolder layout, which the official code reads ImageNet from; the classes are the
  train folder's subfolders, sorted (for ImageNet's synset folders, the usual class ids).

All but digits are read and preprocessed batch by batch (ImageNet does not fit in memory), by the
model's own image processor (resize, crop, normalize to the model's size, PIL backend: the same
pixels with or without torchvision). Training uses the same transform, with no random augmentation,
as the official code fine-tunes (its train and test transforms are one Resize-CenterCrop-Normalize).

A split has `labels` (a tensor, read once) and `images(rows)` (the pixels of those rows);
`batches` reads them through a torch DataLoader, in worker processes when asked.

Models are Hugging Face ViTs: `tiny_vit` builds a small one from a config (trained from scratch,
for the demo and the tests); `load_vit` loads a pretrained ViT or DeiT with a new head.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from painters.layershuffle.study import IMAGE_DATASETS, TINY_LAYERS

# name -> (Hugging Face dataset, train split, test split, label column)
HUB_DATASETS = {
    "imagenet-1k": ("ILSVRC/imagenet-1k", "train", "validation", "label"),
    "cifar100": ("uoft-cs/cifar100", "train", "test", "fine_label"),
}
DATASETS = IMAGE_DATASETS
TEST_FOLDERS = ("val", "validation", "test")  # an image folder's test split: the first of these there is
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")  # ImageNet's files end in .JPEG


class TensorImages:
    """A split held in memory as tensors."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor):
        self.pixels = pixels  # [n, channels, height, width], float
        self.labels = labels  # [n], int64

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, rows) -> torch.Tensor:
        return self.pixels[torch.as_tensor(rows)]


class ProcessedImages:
    """A split read batch by batch: the images of a Hugging Face dataset's image column (image files
    or the data set's own), turned into pixels by the model's image processor."""

    def __init__(self, dataset, image_column: str, labels: torch.Tensor, processor):
        self.dataset = dataset.select_columns([image_column])
        self.image_column = image_column
        self.labels = labels  # [n], int64
        self.processor = processor

    def __len__(self) -> int:
        return len(self.labels)

    def images(self, rows) -> torch.Tensor:
        pictures = self.dataset[[int(row) for row in rows]][self.image_column]
        return self.processor([picture.convert("RGB") for picture in pictures], return_tensors="pt")["pixel_values"]


@dataclass(frozen=True)
class ImageData:
    name: str
    train: TensorImages | ProcessedImages | None  # None when only the test split was asked for
    test: TensorImages | ProcessedImages
    num_labels: int
    class_names: tuple[str, ...] | None = None

    @property
    def image_size(self) -> int:
        return int(self.test.images([0]).shape[-1])

    @property
    def channels(self) -> int:
        return int(self.test.images([0]).shape[1])


class _Batches(torch.utils.data.Dataset):
    """A split as a DataLoader sees it: an item is a batch, (images, labels) of a list of rows."""

    def __init__(self, split):
        self.split = split

    def __getitem__(self, rows):
        return self.split.images(rows), self.split.labels[torch.as_tensor(rows)]


def batches(split, row_batches, workers: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """(images, labels) of each batch of rows `row_batches` yields, in order, read by `workers`
    processes ahead of use (0: in this process, when asked for)."""
    return torch.utils.data.DataLoader(
        _Batches(split), sampler=row_batches, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        # its own generator: drawing the workers' seed from torch's global one would change what
        # dropout draws next, and a resumed run would no longer follow an uninterrupted one
        generator=torch.Generator())


def first_rows(split, n: int):
    """The first `n` images of a split (a limited evaluation), of the same kind."""
    if isinstance(split, TensorImages):
        return TensorImages(split.pixels[:n], split.labels[:n])
    return ProcessedImages(split.dataset.select(range(n)), split.image_column, split.labels[:n], split.processor)


def load_digits(seed: int = 0, test_share: float = 0.25) -> ImageData:
    """scikit-learn's digits, scaled to [-1, 1], split by a permutation drawn from `seed`."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> -1..1
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(labels) * test_share))
    test, train = order[:n_test], order[n_test:]
    return ImageData("digits", TensorImages(images[train], labels[train]), TensorImages(images[test], labels[test]), 10,
                     tuple(str(digit) for digit in range(10)))


def load_image_processor(model: str | Path, trust_remote_code: bool = False):
    """The image processor saved with `model` (a folder, or a Hugging Face id in the local cache)."""
    import transformers

    try:
        # use_fast=False: the PIL backend, the same pixels whether torchvision is installed or not
        return transformers.AutoImageProcessor.from_pretrained(str(model), use_fast=False,
                                                               trust_remote_code=trust_remote_code)
    except OSError as error:
        raise FileNotFoundError(f"{model}: no image processor (preprocessor_config.json) there or in the local "
                                f"Hugging Face cache ({type(error).__name__}); the data must be preprocessed as the "
                                "model was pretrained") from None


def load_data(name: str, seed: int = 0, *, data_dir: str | Path | None = None, image_processor=None,
              train: bool = True, trust_remote_code: bool = False) -> ImageData:
    """The data set `name` (DATASETS). `seed`: digits' train/test split (the others come split);
    `data_dir`: an image folder's root; `image_processor`: a model folder or id whose image processor
    prepares the images (all but digits); `train=False`: the test split only (evaluation)."""
    if name not in DATASETS:
        raise ValueError(f"unknown image data set {name!r}; valid: {', '.join(DATASETS)}")
    if name == "digits":
        data = load_digits(seed)
        return data if train else ImageData(data.name, None, data.test, data.num_labels, data.class_names)
    if name == "imagefolder" and data_dir is None:
        raise ValueError("image data set imagefolder: give its folder (--data-dir DIR: DIR/train/CLASS/*.jpg|png and "
                         f"DIR/{' or '.join(TEST_FOLDERS)}/CLASS/...)")
    if image_processor is None:
        raise ValueError(f"image data set {name}: its images are prepared by a pretrained model's image processor; "
                         "give that model (a folder or Hugging Face id, not the tiny ViT)")
    processor = load_image_processor(image_processor, trust_remote_code)
    if name == "imagefolder":
        return _load_folder(Path(data_dir), processor, train)
    return _load_hub(name, processor, train)


def _load_hub(name: str, processor, train: bool) -> ImageData:
    import datasets

    from painters.glue.data import load_from_hub_cache

    hub_dataset, train_split, test_split, label_column = HUB_DATASETS[name]
    instead = "give its images as a folder (--data imagefolder --data-dir DIR; layershuffle.data_dir)"
    splits = {}
    for split in (train_split, test_split) if train else (test_split,):
        dataset = load_from_hub_cache(hub_dataset, None, split, f"image data set {name}", instead)
        image_columns = [c for c, feature in dataset.features.items() if isinstance(feature, datasets.Image)]
        if not image_columns or label_column not in dataset.features:
            raise ValueError(f"image data set {name} ({hub_dataset}, {split}): expected an image column and "
                             f"{label_column!r}, found {', '.join(dataset.features)}")
        labels = torch.as_tensor(dataset.select_columns([label_column]).with_format("numpy")[label_column], dtype=torch.int64)
        splits[split] = ProcessedImages(dataset, image_columns[0], labels, processor)
    class_names = tuple(dataset.features[label_column].names)
    for split, images in splits.items():
        if len(images) == 0 or not 0 <= int(images.labels.min()) <= int(images.labels.max()) < len(class_names):
            raise ValueError(f"image data set {name} ({hub_dataset}, {split}): labels must be class ids 0..{len(class_names) - 1}"
                             f" (a split without labels, such as ImageNet's test, cannot be scored)")
    return ImageData(name, splits.get(train_split), splits[test_split], len(class_names), class_names)


def _load_folder(root: Path, processor, train: bool) -> ImageData:
    """An image folder: root/train/CLASS/IMAGE and root/val (or validation, test)/CLASS/IMAGE."""
    import datasets

    layout = f"expected {root}/train/CLASS/*.jpg|png and {root}/{' or '.join(TEST_FOLDERS)}/CLASS/..."
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"image folder {root}: no train folder ({layout})")
    class_names = tuple(sorted(entry.name for entry in os.scandir(root / "train") if entry.is_dir()))
    test_folder = next((root / name for name in TEST_FOLDERS if (root / name).is_dir()), None)
    if not class_names or test_folder is None:
        raise FileNotFoundError(f"image folder {root}: {'no class folders in train' if not class_names else 'no test split'} ({layout})")

    def split(folder: Path) -> ProcessedImages:
        unknown = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and entry.name not in class_names)
        if unknown:
            raise ValueError(f"image folder {folder}: class folder(s) {', '.join(unknown[:5])} are not among the train "
                             f"classes ({len(class_names)} in {root / 'train'})")
        files, labels = [], []
        for label, name in enumerate(class_names):
            if (folder / name).is_dir():
                found = sorted(entry.path for entry in os.scandir(folder / name) if entry.name.lower().endswith(IMAGE_SUFFIXES))
                files += found
                labels += [label] * len(found)
        if not files:
            raise FileNotFoundError(f"image folder {folder}: no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders ({layout})")
        # file names in a dataset with an Image column: decoded when a batch asks for them
        images = datasets.Dataset.from_dict({"image": files}, features=datasets.Features({"image": datasets.Image()}))
        return ProcessedImages(images, "image", torch.tensor(labels, dtype=torch.int64), processor)

    return ImageData("imagefolder", split(root / "train") if train else None, split(test_folder), len(class_names), class_names)


def tiny_vit(data: ImageData, layers: int = TINY_LAYERS, hidden: int = 64, heads: int = 4, patch: int = 2, seed: int = 0):
    """A small ViT for `data`, randomly initialized from `seed` (trained from scratch)."""
    import transformers

    config = transformers.ViTConfig(
        image_size=data.image_size, patch_size=patch, num_channels=data.channels, hidden_size=hidden,
        num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden, num_labels=data.num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return transformers.ViTForImageClassification(config)


def load_vit(path: str, num_labels: int, trust_remote_code: bool = False, seed: int = 0):
    """A pretrained ViT or DeiT (folder or Hugging Face id in the local cache) with a `num_labels` head
    (its own where it has that many classes, as a ViT fine-tuned on ImageNet; else a new one). As
    `tiny_vit`, it seeds torch's generator from `seed` first: a new head, and what training draws
    before its own seeding (the position modules), are the same in every run."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    model_class = transformers.AutoModelForImageClassification
    if (config.architectures or [None])[0] == "DeiTForImageClassificationWithTeacher":
        # a distilled DeiT's own class only infers (no loss); the official code trains it as
        # DeiTForImageClassification: its class token, under a new head
        model_class = transformers.DeiTForImageClassification
    torch.manual_seed(seed)
    return model_class.from_pretrained(path, num_labels=num_labels, ignore_mismatched_sizes=True,
                                       trust_remote_code=trust_remote_code)
