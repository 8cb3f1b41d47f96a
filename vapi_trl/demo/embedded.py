"""The embedded default: a Fashion-MNIST subset and a tiny pretrained VQ + LlamaGen policy shipped inside the package.

Everything here loads from files under `vapi_trl/demo/` (no download, no Hub access):

- `data/fashion_mnist_subset.npz`: uint8 28×28 grayscale images and int64 labels in four disjoint splits, `train`
  (VA-π tuning; part of the 56 000-image pool the base was pretrained on), `val` (early stopping and every choice of
  setting: sampling temperature, learning rate), `holdout` (trains the held-out classifier only) and `test`
  (evaluation only). See `data/LICENSE` for the source and licence.
- `weights/image_tokenizer/`: `ImageTokenizerProcessor` (JanusVQVAE, 32 px → 8×8 ids, 512 codes).
- `weights/policy/`: `LlamaGenForClassToImage` (10 classes, 64 image tokens, label dropout 0.1).
- `weights/classifiers/{feature,heldout}/`: the small CNNs of the small benchmark (`SmallClassifier`).
- `weights/recipe.json`: how `scripts/pretrain_tiny.py` produced them, final losses, and the reference
  teacher-forced loss of the shipped policy on a fixed test batch.

Images are zero-padded from 28 to 32 pixels per side (Fashion-MNIST backgrounds are black), so the VQ sees 32×32.
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from typing import Any

import numpy as np

from ..evaluation.arrays import to_pixels, to_rgb_uint8  # re-exported: the demo data in these layouts

DEMO_DIR = os.path.dirname(os.path.abspath(__file__))
DATA_FILE = os.path.join(DEMO_DIR, "data", "fashion_mnist_subset.npz")
WEIGHTS_DIR = os.path.join(DEMO_DIR, "weights")
POLICY_DIR = os.path.join(WEIGHTS_DIR, "policy")
IMAGE_TOKENIZER_DIR = os.path.join(WEIGHTS_DIR, "image_tokenizer")
CLASSIFIERS_DIR = os.path.join(WEIGHTS_DIR, "classifiers")
RECIPE_FILE = os.path.join(WEIGHTS_DIR, "recipe.json")

SPLITS = ("train", "val", "holdout", "test")
IMAGE_SIZE = 32
PAD = (IMAGE_SIZE - 28) // 2
CLASS_NAMES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip


def _missing(path: str, what: str) -> FileNotFoundError:
    return FileNotFoundError(
        f"The embedded {what} is missing: '{path}' does not exist. It ships with the vapi-trl package (package data "
        "under vapi_trl/demo/); reinstall the package, or regenerate it with `python scripts/pretrain_tiny.py`."
    )


@lru_cache(maxsize=1)
def _load_npz() -> dict[str, np.ndarray]:
    if not os.path.isfile(DATA_FILE):
        raise _missing(DATA_FILE, "Fashion-MNIST subset")
    with np.load(DATA_FILE) as data:
        return {key: data[key] for key in data.files}


def pad_images(images: np.ndarray) -> np.ndarray:
    """uint8 `[N, 28, 28]` → uint8 `[N, 32, 32]`, zero (black) border of 2 pixels."""
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"Expected uint8 images [N, 28, 28], got shape {list(images.shape)}.")
    return np.pad(images, ((0, 0), (PAD, PAD), (PAD, PAD)))


def load_arrays(split: str, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """
    One split of the embedded subset as arrays.

    Returns:
        images uint8 `[N, 32, 32]` (grayscale, padded, values 0–255) and labels int64 `[N]` in `[0, 10)`; the first
        `limit` rows when `limit` is given (splits are stored shuffled, so any prefix is class-mixed).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    data = _load_npz()
    images, labels = data[f"{split}_images"], data[f"{split}_labels"].astype(np.int64)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit must be ≥ 1, got {limit}.")
        images, labels = images[:limit], labels[:limit]
    return pad_images(images), labels


def load_dataset(split: str = "train", limit: int | None = None):
    """
    One split as a `datasets.Dataset` with columns `image` (`Image` feature, 32×32 grayscale PIL) and `class_label`
    (int64 in `[0, 10)`): the rows `VAPiTrainer` expects.
    """
    from datasets import Dataset, Features, Image, Value

    images, labels = load_arrays(split, limit)
    return Dataset.from_dict(
        {"image": list(images), "class_label": labels.tolist()},
        features=Features({"image": Image(), "class_label": Value("int64")}),
    )


def load_policy():
    """The shipped `LlamaGenForClassToImage` (fp32, eval mode)."""
    from vapi_trl.models import LlamaGenForClassToImage

    if not os.path.isdir(POLICY_DIR):
        raise _missing(POLICY_DIR, "policy")
    return LlamaGenForClassToImage.from_pretrained(POLICY_DIR).eval()


def load_image_tokenizer():
    """The shipped `ImageTokenizerProcessor` (frozen fp32 JanusVQVAE, 32 px, 8×8 ids, 512 codes)."""
    from vapi_trl.models import ImageTokenizerProcessor

    if not os.path.isdir(IMAGE_TOKENIZER_DIR):
        raise _missing(IMAGE_TOKENIZER_DIR, "image tokenizer")
    return ImageTokenizerProcessor.from_pretrained(IMAGE_TOKENIZER_DIR, local_files_only=True)


def load_classifiers():
    """`(feature, heldout)` shipped `SmallClassifier`s, eval mode: FID/KID/P-R features, and class accuracy."""
    from vapi_trl.evaluation.small_benchmark import SmallClassifier

    return tuple(
        SmallClassifier.from_pretrained(os.path.join(CLASSIFIERS_DIR, name)) for name in ("feature", "heldout")
    )


def load_recipe() -> dict[str, Any]:
    """The pretraining recipe and recorded losses (`weights/recipe.json`)."""
    if not os.path.isfile(RECIPE_FILE):
        raise _missing(RECIPE_FILE, "pretraining recipe")
    with open(RECIPE_FILE) as f:
        return json.load(f)


__all__ = [
    "CLASSIFIERS_DIR",
    "CLASS_NAMES",
    "DATA_FILE",
    "IMAGE_SIZE",
    "IMAGE_TOKENIZER_DIR",
    "POLICY_DIR",
    "RECIPE_FILE",
    "SPLITS",
    "load_arrays",
    "load_classifiers",
    "load_dataset",
    "load_image_tokenizer",
    "load_policy",
    "load_recipe",
    "pad_images",
    "to_pixels",
    "to_rgb_uint8",
]
