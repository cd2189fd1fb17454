"""Image classification data and ViT models for the LayerShuffle study.

Data sets are tensors in memory: `digits` (scikit-learn's 8x8 handwritten digits, shipped with
the package: 1,797 images, 10 classes), split into train and test by a seeded permutation. Models
are Hugging Face ViTs: `tiny_vit` builds a small one from a config (trained from scratch, for the
demo and the tests); `load_vit` loads a pretrained ViT or DeiT with a new head.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

DATASETS = ("digits",)


@dataclass(frozen=True)
class ImageData:
    name: str
    train_images: torch.Tensor  # [n, channels, height, width], float
    train_labels: torch.Tensor  # [n], int64
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_labels: int

    @property
    def image_size(self) -> int:
        return int(self.train_images.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])


def load_digits(seed: int = 0, test_share: float = 0.25) -> ImageData:
    """scikit-learn's digits, scaled to [-1, 1], split by a permutation drawn from `seed`."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 8.0 - 1.0  # 0..16 -> -1..1
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = int(round(len(labels) * test_share))
    test, train = order[:n_test], order[n_test:]
    return ImageData("digits", images[train], labels[train], images[test], labels[test], 10)


def load_data(name: str, seed: int = 0) -> ImageData:
    if name not in DATASETS:
        raise ValueError(f"unknown image data set {name!r}; valid: {', '.join(DATASETS)}")
    return load_digits(seed)


def tiny_vit(data: ImageData, layers: int = 6, hidden: int = 64, heads: int = 4, patch: int = 2, seed: int = 0):
    """A small ViT for `data`, randomly initialized from `seed` (trained from scratch)."""
    import transformers

    config = transformers.ViTConfig(
        image_size=data.image_size, patch_size=patch, num_channels=data.channels, hidden_size=hidden,
        num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=2 * hidden, num_labels=data.num_labels,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return transformers.ViTForImageClassification(config)


def load_vit(path: str, num_labels: int, trust_remote_code: bool = False):
    """A pretrained ViT or DeiT (folder or Hugging Face id in the local cache) with a new `num_labels` head."""
    import transformers

    return transformers.AutoModelForImageClassification.from_pretrained(
        path, num_labels=num_labels, ignore_mismatched_sizes=True, trust_remote_code=trust_remote_code)
