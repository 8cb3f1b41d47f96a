"""
Image datasets for VA-π: load a `datasets` dataset (Hub id, local script/data directory or `save_to_disk` folder), map
its image and condition columns onto the trainer's names (`image`, and `prompt` or `class_label`), optionally take a
subset, and drop the images that fail to decode, reporting each of them (count, row index, file) rather than failing
mid-training or dropping them silently.

Decoding check: the image column is cast to `Image(decode=False)`, every image is fully decoded once with PIL (so
truncated files are caught, not only bad headers), failures are collected, logged and filtered out, and the column is
cast back to `Image()` so rows reach the trainer as PIL images. Streaming datasets are checked lazily: each failure is
logged when it is met, with a running count.

The training sets of the commands and examples are loaded here too, in one place: `load_c2i_dataset` (an
ImageNet-style folder or a dataset with class labels, optionally K images per class) and `load_t2i_dataset` (webdataset
tar shards or a dataset with captions, optionally with pre-computed T5 features).
"""

from __future__ import annotations

import io
import logging
import os
import tarfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict, load_dataset, load_from_disk
from datasets import ClassLabel, Value
from datasets import Image as ImageFeature

logger = logging.getLogger(__name__)

# Image extensions of webdataset shards, in the order they are looked for.
_SHARD_IMAGE_COLUMNS = ("jpg", "jpeg", "png", "webp")

# Error messages listed in one log record at most; the count is always complete.
_MAX_REPORTED_ERRORS = 20
_ERROR_COLUMN = "__vapi_decode_error__"


@dataclass
class DecodeReport:
    """Images dropped because they could not be decoded (or had an empty caption): `(row index, file, error)`."""

    num_rows: int = 0
    failures: list[tuple[int, str | None, str]] = field(default_factory=list)

    @property
    def num_failed(self) -> int:
        return len(self.failures)

    def summary(self, name: str) -> str:
        lines = [f"{self.num_failed} of {self.num_rows} rows of {name} were dropped:"]
        for index, path, error in self.failures[:_MAX_REPORTED_ERRORS]:
            lines.append(f"  row {index}" + (f" ({path})" if path else "") + f": {error}")
        if self.num_failed > _MAX_REPORTED_ERRORS:
            lines.append(f"  ... and {self.num_failed - _MAX_REPORTED_ERRORS} more")
        return "\n".join(lines)


class ImageDecodeError(ValueError):
    """An image value that does not decode to a non-empty image; the message is one line."""


def _open_image(value: Any) -> PIL.Image.Image:
    """Open (lazily, header only) an encoded image value: a `{"bytes", "path"}` dict, raw bytes or a path."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    elif isinstance(value, (bytes, bytearray)):
        data, path = bytes(value), None
    elif isinstance(value, str):
        data, path = None, value
    elif value is None:
        raise ImageDecodeError("no image")
    else:
        raise ImageDecodeError(f"unsupported image value of type {type(value).__name__}")
    if data is None and not path:
        raise ImageDecodeError("no image")
    return PIL.Image.open(io.BytesIO(data) if data is not None else path)


def decode_image(value: Any) -> PIL.Image.Image:
    """
    Fully decode one image value: `{"bytes": ..., "path": ...}` as stored by `Image(decode=False)`, a path, raw bytes
    or a PIL image (loaded in place). Every pixel is decoded (`load()`: `verify()` alone misses truncated files).

    The one decoder of the package, under one error policy: any failure of the decoder, whatever PIL raises, and an
    empty image, raise an `ImageDecodeError`. `load_image_dataset` uses it to drop undecodable rows up front and
    `VAPiTrainer` to skip an image met in training.
    """
    try:
        image = value if isinstance(value, PIL.Image.Image) else _open_image(value)
        image.load()
    except ImageDecodeError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure is reported, whatever PIL raises
        raise ImageDecodeError(f"{type(error).__name__}: {error}") from error
    if image.width == 0 or image.height == 0:
        raise ImageDecodeError(f"empty image {image.size}")
    return image


def is_encoded_image(value: Any) -> bool:
    """Whether `value` is an image not yet decoded, as a row of an `Image(decode=False)` column carries it."""
    return isinstance(value, dict) and ("bytes" in value or "path" in value)


def describe_image(value: Any) -> str:
    """Where an image value comes from, for a log line: its path, its byte count, or its type."""
    if isinstance(value, dict):
        return f"path={value.get('path')!r}" if value.get("path") else f"{len(value.get('bytes') or b'')} bytes"
    return type(value).__name__


def check_image(value: Any) -> str | None:
    """
    Fully decode one raw image value (see `decode_image`). Returns `None` if it decodes, else a one-line error message.
    """
    try:
        image = decode_image(value)
    except ImageDecodeError as error:
        return str(error)
    if image is not value:
        image.close()
    return None


def defer_image_decoding(dataset: Any) -> Any:
    """Cast an `Image` column to `decode=False` (in a dataset or a dict of them), so that rows carry the encoded
    bytes/path and the trainer decodes them with `decode_image`, skipping those that fail instead of stopping."""
    if isinstance(dataset, dict):
        return {key: defer_image_decoding(value) for key, value in dataset.items()}
    features = getattr(dataset, "features", None)
    if features is not None and isinstance(features.get("image"), ImageFeature) and features["image"].decode:
        return dataset.cast_column("image", ImageFeature(decode=False))
    return dataset


def check_dataset_columns(dataset: Any, name: str, condition_columns: tuple[str, ...]) -> None:
    """
    Raise unless `dataset` (a `Dataset`, `IterableDataset` or a dict of them) has the `image` column and the policy's
    `condition_columns` and, when map-style, at least one row. An `IterableDataset` of unknown features passes.
    """
    if isinstance(dataset, dict):
        for key, value in dataset.items():
            check_dataset_columns(value, f"{name}[{key!r}]", condition_columns)
        return
    if not isinstance(dataset, (Dataset, IterableDataset)):
        raise TypeError(f"{name} must be a datasets.Dataset or IterableDataset, got {type(dataset).__name__}.")
    columns = dataset.column_names
    if columns is None:  # an IterableDataset with unknown features is checked at the first batch
        return
    missing = [column for column in ("image", *condition_columns) if column not in columns]
    if missing:
        raise ValueError(
            f"{name} is missing the column(s) {missing} (it has {columns}). VA-π needs `image` (the training image) "
            f"and the policy's condition column(s) {list(condition_columns)}; rename yours with "
            "`dataset.rename_column(old, new)`."
        )
    if isinstance(dataset, Dataset) and len(dataset) == 0:
        raise ValueError(f"{name} is empty.")


def _row_error(image: Any, condition: Any, condition_column: str) -> str | None:
    error = check_image(image)
    if error is None and condition_column == "prompt" and (not isinstance(condition, str) or not condition.strip()):
        error = f"empty or missing caption ({condition!r})"
    if error is None and condition is None:
        error = f"missing {condition_column}"
    return error


def check_class_labels(dataset: Any, column: str = "class_label", name: str = "dataset") -> None:
    """
    Raise unless every value of `column` is an integer class id (see `class_label_value`): a float column of whole
    numbers passes, `3.7`, NaN, strings and missing labels raise a `ValueError`/`TypeError` naming the row. Integer and
    `ClassLabel` columns are accepted without reading them; streaming datasets are checked row by row in training.
    """
    from vapi_trl.models.modeling_utils import class_label_value

    features = getattr(dataset, "features", None) or {}
    feature = features.get(column)
    if isinstance(feature, ClassLabel) or (isinstance(feature, Value) and feature.dtype.startswith(("int", "uint"))):
        return
    if isinstance(dataset, IterableDataset) or column not in (dataset.column_names or []):
        return
    for index, value in enumerate(dataset[column]):
        try:
            class_label_value(value)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name}, row {index}: {error}") from error


def _image_path(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("path")
    return value if isinstance(value, str) else None


def drop_undecodable_images(
    dataset: Dataset, condition_column: str = "prompt", name: str = "dataset", num_proc: int | None = None
) -> tuple[Dataset, DecodeReport]:
    """
    Drop the rows of a map-style dataset whose `image` does not decode (or whose caption is empty), and log them.

    Args:
        dataset (`Dataset`): with an `image` column (any `Image` feature, paths or bytes) and `condition_column`.
        condition_column (`str`): `"prompt"` (captions must be non-empty strings) or `"class_label"`.
        name (`str`): how the dataset is named in the log.
        num_proc (`int`, *optional*): processes for the decoding pass.

    Returns:
        The filtered dataset (image column decoded to PIL on access) and a `DecodeReport`.
    """
    raw = dataset.cast_column("image", ImageFeature(decode=False))

    def find_errors(batch: dict[str, list]) -> dict[str, list]:
        return {
            _ERROR_COLUMN: [
                _row_error(image, condition, condition_column)
                for image, condition in zip(batch["image"], batch[condition_column])
            ]
        }

    checked = raw.map(find_errors, batched=True, batch_size=64, num_proc=num_proc, desc=f"Decoding images of {name}")
    errors = checked[_ERROR_COLUMN]
    report = DecodeReport(num_rows=len(errors))
    bad = [index for index, error in enumerate(errors) if error is not None]
    if bad:
        paths = raw.select(bad).cast_column("image", ImageFeature(decode=False))["image"]
        report.failures = [(index, _image_path(value), errors[index]) for index, value in zip(bad, paths)]
        logger.warning(report.summary(name))
        keep = sorted(set(range(len(errors))) - set(bad))
        dataset = raw.select(keep)
    else:
        dataset = raw
    return dataset.cast_column("image", ImageFeature()), report


def _filter_streaming(dataset: IterableDataset, condition_column: str, name: str) -> IterableDataset:
    """Lazy counterpart of `drop_undecodable_images` for streaming datasets: logs each failure when it is met."""
    state = {"seen": 0, "failed": 0}

    def keep(row: dict[str, Any], index: int) -> bool:
        state["seen"] += 1
        error = _row_error(row["image"], row[condition_column], condition_column)
        if error is None:
            return True
        state["failed"] += 1
        path = _image_path(row["image"])
        logger.warning(
            f"Dropped row {index} of {name}" + (f" ({path})" if path else "") + f": {error} "
            f"({state['failed']} dropped of {state['seen']} rows read so far)."
        )
        return False

    def decode(row: dict[str, Any]) -> dict[str, Any]:
        return {"image": decode_image(row["image"])}

    # Casting the filtered stream back to `Image()` would decode before the filter runs (the features of an
    # `IterableDataset` apply to the whole chain), so the kept rows are decoded by a map instead.
    return dataset.cast_column("image", ImageFeature(decode=False)).filter(keep, with_indices=True).map(decode)


def _select_split(dataset: Any, split: str, source: str) -> Dataset | IterableDataset:
    if isinstance(dataset, (DatasetDict, IterableDatasetDict)):
        if split not in dataset:
            raise ValueError(f"'{source}' has no split {split!r}; available: {sorted(dataset)}.")
        return dataset[split]
    return dataset


def _is_saved_to_disk(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "dataset_info.json")) or os.path.isfile(
        os.path.join(path, "dataset_dict.json")
    )


def load_image_dataset(
    name_or_path: str,
    split: str = "train",
    image_column: str = "image",
    caption_column: str | None = "prompt",
    label_column: str | None = None,
    config_name: str | None = None,
    data_dir: str | None = None,
    revision: str | None = None,
    streaming: bool = False,
    num_samples: int | None = None,
    shuffle_seed: int | None = None,
    verify_images: bool = True,
    keep_columns: tuple[str, ...] = ("gt_ids",),
    num_proc: int | None = None,
) -> Dataset | IterableDataset:
    """
    Load an image dataset for `VAPiTrainer`, with columns `image` and `prompt` (text-to-image) or `class_label`.

    Args:
        name_or_path (`str`): Hub dataset id, a local directory readable by `load_dataset` (e.g. an image folder with
            `metadata.jsonl`, or parquet files), or a folder written by `Dataset.save_to_disk`.
        split (`str`, *optional*, defaults to `"train"`): split to load (ignored for a single saved `Dataset`).
        image_column (`str`, *optional*, defaults to `"image"`): column holding the images; renamed to `image`.
        caption_column (`str`, *optional*, defaults to `"prompt"`): caption column, renamed to `prompt`; `None` for a
            class-conditional dataset.
        label_column (`str`, *optional*): class column, renamed to `class_label` (class-conditional datasets).
        config_name, data_dir, revision: passed to `load_dataset`.
        streaming (`bool`, *optional*, defaults to `False`): return an `IterableDataset` (Hub or local files; a
            `save_to_disk` folder is converted with `to_iterable_dataset`).
        num_samples (`int`, *optional*): keep the first `num_samples` rows (after shuffling, if `shuffle_seed` is set),
            counted before undecodable rows are dropped.
        shuffle_seed (`int`, *optional*): shuffle before taking the subset (buffered shuffle when streaming).
        verify_images (`bool`, *optional*, defaults to `True`): decode every image once and drop, with a log record,
            those that fail (and rows with empty captions). Map-style datasets are checked eagerly, streaming ones
            lazily.
        keep_columns (`tuple[str, ...]`, *optional*): extra columns kept when present (e.g. pre-extracted `gt_ids`);
            all other columns are removed.
        num_proc (`int`, *optional*): processes for the eager decoding check.

    Returns:
        `Dataset` or `IterableDataset` with columns `image` (decoded to PIL on access), `prompt` or `class_label`, and
        the present `keep_columns`.
    """
    if (caption_column is None) == (label_column is None):
        raise ValueError("Give exactly one of `caption_column` (text-to-image) and `label_column` (class-to-image).")
    if num_samples is not None and num_samples < 1:
        raise ValueError(f"num_samples must be ≥ 1 or None, got {num_samples}.")
    if os.path.isdir(name_or_path) and _is_saved_to_disk(name_or_path):
        dataset = _select_split(load_from_disk(name_or_path), split, name_or_path)
        if streaming:
            dataset = dataset.to_iterable_dataset()
    else:
        dataset = load_dataset(
            name_or_path, config_name, data_dir=data_dir, split=split, revision=revision, streaming=streaming
        )
        dataset = _select_split(dataset, split, name_or_path)

    source_column, target_column = (
        (caption_column, "prompt") if caption_column is not None else (label_column, "class_label")
    )
    columns = dataset.column_names
    if verify_images and columns is not None and image_column in columns:
        # Raw bytes/paths from the start: any later step of a streaming pipeline would otherwise decode them already.
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    if columns is not None:
        missing = [column for column in (image_column, source_column) if column not in columns]
        if missing:
            raise ValueError(
                f"'{name_or_path}' has no column(s) {missing} (columns: {columns}); set `image_column` and "
                f"`{'caption_column' if caption_column is not None else 'label_column'}` to the right names."
            )
        renames = {old: new for old, new in ((image_column, "image"), (source_column, target_column)) if old != new}
        clashes = [new for new in renames.values() if new in columns and new not in renames]
        if clashes:
            dataset = dataset.remove_columns(clashes)
        if renames:
            dataset = dataset.rename_columns(renames)
        kept = {"image", target_column, *keep_columns}
        extra = [column for column in dataset.column_names if column not in kept]
        if extra:
            dataset = dataset.remove_columns(extra)

    if shuffle_seed is not None:
        dataset = dataset.shuffle(seed=shuffle_seed)
    if num_samples is not None:
        if isinstance(dataset, IterableDataset):
            dataset = dataset.take(num_samples)
        else:
            dataset = dataset.select(range(min(num_samples, len(dataset))))

    if verify_images:
        if isinstance(dataset, IterableDataset):
            dataset = _filter_streaming(dataset, target_column, name_or_path)
        else:
            dataset, report = drop_undecodable_images(dataset, target_column, name_or_path, num_proc=num_proc)
            if report.num_failed == report.num_rows:
                raise ValueError(f"No image of '{name_or_path}' could be decoded:\n{report.summary(name_or_path)}")
    return dataset


# ---------------------------------------------------------------------------------------------------------------------
# The training sets of the commands and examples: class-to-image (ImageNet-style folders) and text-to-image (tar shards)
# ---------------------------------------------------------------------------------------------------------------------


def select_per_class(dataset, images_per_class: int, seed: int = 0, column: str = "class_label"):
    """The rows of `images_per_class` random images of each class (all of a smaller class), in dataset order."""
    labels = np.asarray(dataset[column])
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        indices = np.flatnonzero(labels == label)
        keep.append(rng.permutation(indices)[:images_per_class])
    return dataset.select(np.sort(np.concatenate(keep)).tolist())


def load_c2i_dataset(
    train_dir: str | None = None,
    dataset_name: str | None = None,
    split: str = "train",
    image_column: str = "image",
    label_column: str | None = None,
    config_name: str | None = None,
    images_per_class: int | None = None,
    subset_seed: int = 0,
    verify_images: bool = True,
):
    """
    Class-to-image training rows (`image`, `class_label`, and `gt_ids` when present) from an ImageNet-style folder or a
    `datasets` dataset, optionally `images_per_class` per class; undecodable images are dropped with a report.
    """
    if (train_dir is None) == (dataset_name is None):
        raise ValueError("Give exactly one of --train_dir (ImageNet-style folder) and --dataset_name.")
    if train_dir is not None:
        # imagefolder labels are `ClassLabel(names=sorted(folder names))`: ImageNet wnids -> the standard ids.
        source, kwargs = "imagefolder", {"data_dir": train_dir, "label_column": "label"}
    else:
        if label_column is None:
            label_column = _default_label_column(dataset_name, split)
        source, kwargs = dataset_name, {"label_column": label_column, "config_name": config_name}
    dataset = load_image_dataset(
        source, split=split, image_column=image_column, caption_column=None, verify_images=False, **kwargs
    )
    check_class_labels(dataset, name=repr(train_dir or dataset_name))  # before select_per_class groups by label
    if images_per_class is not None:
        dataset = select_per_class(dataset, images_per_class, seed=subset_seed)
    if verify_images:
        dataset, _ = drop_undecodable_images(dataset, "class_label", train_dir or dataset_name)
    return dataset


def _default_label_column(dataset_name: str, split: str) -> str:
    """`label`, or `class_label` for a `save_to_disk` folder with that column and no `label` (`vapi-trl tokenize`)."""
    if os.path.isdir(dataset_name):
        try:
            saved = load_from_disk(dataset_name)
        except (FileNotFoundError, ValueError):
            return "label"
        if isinstance(saved, DatasetDict):
            saved = saved[split] if split in saved else next(iter(saved.values()))
        if "class_label" in saved.column_names and "label" not in saved.column_names:
            return "class_label"
    return "label"


def _shard_image_column(tar_shards: str) -> str:
    """The image extension of the first sample of the first shard in `tar_shards`."""
    shards = sorted(name for name in os.listdir(tar_shards) if name.endswith(".tar"))
    if not shards:
        raise ValueError(f"--tar_shards {tar_shards!r} holds no .tar file.")
    with tarfile.open(os.path.join(tar_shards, shards[0])) as tar:
        for member in tar:
            extension = member.name.rsplit(".", 1)[-1].lower()
            if extension in _SHARD_IMAGE_COLUMNS:
                return extension
    raise ValueError(f"{shards[0]} has no image member with extension in {_SHARD_IMAGE_COLUMNS}.")


def load_t2i_dataset(
    dataset_name: str | None = None,
    tar_shards: str | None = None,
    split: str = "train",
    image_column: str | None = None,
    caption_column: str | None = None,
    config_name: str | None = None,
    streaming: bool = False,
    num_samples: int | None = None,
    shuffle_seed: int | None = None,
    verify_images: bool = True,
):
    """
    Text-to-image training rows (`image`, `prompt`, and `caption_embeds` when pre-computed) from tar shards or a
    `datasets` dataset; undecodable images and empty captions are dropped with a report.
    """
    if (dataset_name is None) == (tar_shards is None):
        raise ValueError("Give exactly one of --tar_shards (webdataset tar folder) and --dataset_name.")
    if tar_shards is not None:
        if not os.path.isdir(tar_shards):
            raise ValueError(f"--tar_shards must be a folder of .tar shards, got {tar_shards!r}.")
        source, kwargs = "webdataset", {"data_dir": tar_shards}
        image_column = image_column or _shard_image_column(tar_shards)
        caption_column = caption_column or "txt"
    else:
        source, kwargs = dataset_name, {"config_name": config_name}
        image_column, caption_column = image_column or "image", caption_column or "prompt"
    dataset = load_image_dataset(
        source,
        split=split,
        image_column=image_column,
        caption_column=caption_column,
        streaming=streaming,
        num_samples=num_samples,
        shuffle_seed=shuffle_seed,
        verify_images=verify_images,
        keep_columns=("caption_embeds", "caption_mask", "gt_ids"),
        **kwargs,
    )
    if has_cached_features(dataset) and hasattr(dataset, "with_format"):
        # numpy rows instead of nested lists of Python floats (120 x 2048 per caption)
        columns = [name for name in ("caption_embeds", "caption_mask") if name in dataset.column_names]
        dataset = dataset.with_format("numpy", columns=columns, output_all_columns=True)
    return dataset


def has_cached_features(dataset) -> bool:
    """Whether the rows carry pre-computed `caption_embeds` (then no text encoder is needed)."""
    return "caption_embeds" in (dataset.column_names or [])


__all__ = [
    "DecodeReport",
    "ImageDecodeError",
    "check_class_labels",
    "check_dataset_columns",
    "check_image",
    "decode_image",
    "defer_image_decoding",
    "describe_image",
    "drop_undecodable_images",
    "has_cached_features",
    "is_encoded_image",
    "load_c2i_dataset",
    "load_image_dataset",
    "load_t2i_dataset",
    "select_per_class",
]
