"""
Class-to-image sampling for FID/IS evaluation, with the conventions of the LlamaGen/VA-π evaluation (algorithm.md §6).

KV-cache autoregressive sampling (`LlamaGenForClassToImage.sample`: CFG, temperature, top-k, top-p), VQ decoding at the
model resolution, then `F.interpolate(size=resize, mode="bicubic")` without antialias (384 -> 256 for ImageNet 256) and
uint8 = clamp(127.5 * x + 128, 0, 255) truncated, as the reference `sample_c2i_ddp.py`. Outputs, in `output_dir`:

- `000000.png`, `000001.png`, ... one PNG per sample, index order;
- `samples.npz` with `arr_0`, uint8 `[N, resize, resize, 3]` (the ADM evaluator's layout);
- `run.json`: seed, label scheme, guidance, sampling filters, batch size, model paths, versions.

Reproducible and resumable: labels are drawn once from `seed`, and batch `b` samples with its own generator seeded
from `(seed, b)`, so a batch regenerates the same images whatever ran before it. A rerun skips batches whose PNGs all
exist. `run.json` records the content fingerprints of the policy and the image tokenizer
(`vapi_trl.provenance.fingerprint`) with every setting that changes the pixels; a folder is resumed only when all of
them match, and a folder holding anything else is refused unless `overwrite=True` (which deletes only our own files).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F

RUN_FILE = "run.json"
NPZ_FILE = "samples.npz"
LABEL_SCHEMES = ("random", "balanced")

# Settings that change the images: a resumed run must use the same values.
_REPRODUCIBILITY_KEYS = (
    "seed", "label_scheme", "num_samples", "batch_size", "cfg_scale", "temperature", "top_k", "top_p", "bf16",
    "resize", "num_classes", "labels_sha256", "model_fingerprint", "image_tokenizer_fingerprint",
)  # fmt: skip
# Entries of a sample folder that `sample_class_to_image` writes (and `overwrite=True` may delete).
_OWNED_ENTRY = re.compile(r"^(\d{6}\.png(\.tmp)?|samples\.npz(\.tmp)?|run\.json\.tmp)$")


def _check_sampling(temperature: float, top_k: int, top_p: float, resize: int | None, cfg_scale: float = 1.0) -> None:
    """
    Raise a `ValueError` unless temperature > 0, top_k >= 0, top_p in (0, 1], `resize` is `None` or positive and
    cfg_scale >= 0.
    """
    if not cfg_scale >= 0:  # also NaN
        raise ValueError(f"cfg_scale must be ≥ 0 (1.0 = no guidance), got {cfg_scale}.")
    if temperature <= 0 or top_k < 0 or not 0.0 < top_p <= 1.0:
        raise ValueError(
            f"Need temperature > 0, top_k >= 0 and top_p in (0, 1]; got temperature={temperature}, "
            f"top_k={top_k}, top_p={top_p}."
        )
    if resize is not None and resize < 1:
        raise ValueError(f"resize must be a positive image side or None, got {resize}.")


@dataclass
class SamplingSettings:
    """
    What `sample_class_to_image` does; written to `run.json`.

    Args:
        num_samples: images to generate (50,000 for ImageNet FID).
        batch_size: images per `sample` call; part of the seeding, so keep it fixed when resuming.
        seed: global seed of labels and sampling.
        label_scheme: `"random"` (uniform random labels, as the reference sampler) or `"balanced"` (`i % num_classes`).
        cfg_scale: classifier-free guidance (1.0: none, the "without CFG" numbers).
        temperature, top_k, top_p: sampling filters (evaluation: 1.0, 0, 1.0).
        bf16: run the policy under bf16 autocast (evaluation convention; off on CPU for exactness).
        resize: side of the saved images (bicubic, no antialias); `None` keeps the decoder's resolution.
    """

    num_samples: int = 50_000
    batch_size: int = 32
    seed: int = 0
    label_scheme: str = "random"
    cfg_scale: float = 1.0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    bf16: bool = False
    resize: int | None = 256
    model_path: str | None = None
    image_tokenizer_path: str | None = None
    num_classes: int | None = None

    def validate(self) -> None:
        if self.num_samples < 1 or self.batch_size < 1:
            raise ValueError(
                f"num_samples ({self.num_samples}) and batch_size ({self.batch_size}) must be positive integers."
            )
        if self.label_scheme not in LABEL_SCHEMES:
            raise ValueError(f"label_scheme must be one of {LABEL_SCHEMES}, got {self.label_scheme!r}.")
        _check_sampling(self.temperature, self.top_k, self.top_p, self.resize, self.cfg_scale)


def sample_labels(num_samples: int, num_classes: int, seed: int, scheme: str = "random") -> torch.LongTensor:
    """
    Class labels `(num_samples,)` int64 in `[0, num_classes)`: uniform random from `seed` (`"random"`) or
    `i % num_classes` (`"balanced"`, equal counts when `num_samples` is a multiple of `num_classes`).
    """
    if scheme == "balanced":
        return torch.arange(num_samples) % num_classes
    if scheme == "random":
        return torch.randint(0, num_classes, (num_samples,), generator=torch.Generator().manual_seed(seed))
    raise ValueError(f"label scheme must be one of {LABEL_SCHEMES}, got {scheme!r}.")


def batch_seed(seed: int, batch_index: int) -> int:
    """Seed of batch `batch_index`: independent streams per `(seed, batch)`, unlike `seed + batch_index`."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def to_uint8_images(pixel_values: torch.Tensor, resize: int | None = 256) -> np.ndarray:
    """
    Decoder output `[B, 3, H, W]` (≈[-1, 1], unclamped) -> uint8 `[B, S, S, 3]`: bicubic resize to `resize` without
    antialias (`F.interpolate` default, the reference script), then clamp(127.5 * x + 128, 0, 255), truncated.
    """
    pixels = pixel_values.float()
    if resize is not None and tuple(pixels.shape[-2:]) != (resize, resize):
        pixels = F.interpolate(pixels, size=(resize, resize), mode="bicubic")
    pixels = torch.clamp(127.5 * pixels + 128.0, 0, 255)
    return pixels.permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()


def png_path(output_dir: str, index: int) -> str:
    """Path of sample `index` in `output_dir` (`000123.png`, six digits as the ADM layout)."""
    return os.path.join(output_dir, f"{index:06d}.png")


def _prepare_run_folder(
    output_dir: str, record: dict[str, Any], keys: Sequence[str], owned: re.Pattern, overwrite: bool, what: str
) -> bool:
    """`vapi_trl.provenance.prepare_output_folder` with the entries matching `owned` as the writer's own files."""
    from vapi_trl.provenance import prepare_output_folder

    return prepare_output_folder(
        output_dir, record, keys, owned=lambda name: bool(owned.match(name)), overwrite=overwrite, what=what
    )


def _autocast(device: torch.device, bf16: bool):
    """bf16 autocast on `device` when `bf16`, else a null context."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def _save_png(image: np.ndarray, path: str) -> None:
    # Write then rename: an interrupted run never leaves a truncated PNG that a resume would take as done.
    PIL.Image.fromarray(image).save(path + ".tmp", format="PNG")
    os.replace(path + ".tmp", path)


@torch.no_grad()
def sample_class_to_image(
    model: Any,
    image_tokenizer: Any,
    output_dir: str | os.PathLike,
    settings: SamplingSettings,
    labels: Sequence[int] | torch.Tensor | None = None,
    progress: bool = True,
    write_npz: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Generate `settings.num_samples` images with `model.sample` and write PNGs, `samples.npz` and `run.json`.

    Args:
        model: a `LlamaGenForClassToImage` (or any model with `sample(class_labels, cfg_scale, temperature, top_k,
            top_p, generator)` -> ids `[B, N]` and `config.num_classes`), on its target device.
        image_tokenizer: an `ImageTokenizerProcessor` (`decode(ids)` -> `[B, 3, H, W]` in ≈[-1, 1]).
        output_dir: folder for the PNGs, `samples.npz` and `run.json`; created if needed.
        settings: sampling settings (`SamplingSettings`).
        labels: explicit labels `(num_samples,)` instead of `settings.label_scheme`.
        progress: show a tqdm bar.
        write_npz: write `samples.npz` at the end.
        overwrite: delete the sample files already in `output_dir` (PNGs, `samples.npz`, `run.json`) instead of
            refusing a folder that is not a resumable run of the same model, image tokenizer and settings.

    Returns:
        The run record (also written to `run.json`), with `"npz"` the path of the `.npz` when written and
        `"generated_batches"`/`"skipped_batches"` counts of this call.
    """
    from tqdm.auto import tqdm

    import vapi_trl
    from vapi_trl.provenance import fingerprint

    settings.validate()
    output_dir = os.fspath(output_dir)
    num_classes = int(model.config.num_classes)
    settings.num_classes = num_classes
    if labels is None:
        labels = sample_labels(settings.num_samples, num_classes, settings.seed, settings.label_scheme)
        scheme = settings.label_scheme
    else:
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.shape != (settings.num_samples,):
            raise ValueError(f"labels must have shape ({settings.num_samples},), got {tuple(labels.shape)}.")
        scheme = settings.label_scheme = "given"
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}].")

    record = {**asdict(settings), "label_scheme": scheme, "vapi_trl_version": vapi_trl.__version__}
    counts = torch.bincount(labels, minlength=num_classes)
    record["label_counts_min_max"] = [int(counts.min()), int(counts.max())]
    record["labels_sha256"] = hashlib.sha256(labels.numpy().astype("<i8").tobytes()).hexdigest()
    # What made the pixels, by content: another model (or tokenizer) in the same folder is never taken as done.
    record["model_fingerprint"] = fingerprint(model, progress)
    record["image_tokenizer_fingerprint"] = fingerprint(image_tokenizer, progress)
    _prepare_run_folder(output_dir, record, _REPRODUCIBILITY_KEYS, _OWNED_ENTRY, overwrite, what="samples")

    device = next(model.parameters()).device
    model.eval()
    autocast = _autocast(device, settings.bf16)
    num_batches = math.ceil(settings.num_samples / settings.batch_size)
    generated = skipped = 0
    for batch_index in tqdm(range(num_batches), desc="sampling", unit="batch", disable=not progress):
        start = batch_index * settings.batch_size
        indices = range(start, min(start + settings.batch_size, settings.num_samples))
        if all(os.path.isfile(png_path(output_dir, i)) for i in indices):
            skipped += 1
            continue
        generator = torch.Generator(device=device).manual_seed(batch_seed(settings.seed, batch_index))
        batch_labels = labels[start : start + len(indices)].to(device)
        with autocast:
            ids = model.sample(
                batch_labels,
                cfg_scale=settings.cfg_scale,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                generator=generator,
            )
        images = to_uint8_images(image_tokenizer.decode(ids), settings.resize)
        for index, image in zip(indices, images):
            _save_png(image, png_path(output_dir, index))
        generated += 1

    if write_npz:
        record["npz"] = write_npz_from_folder(output_dir, settings.num_samples, progress=progress)
    record.update(generated_batches=generated, skipped_batches=skipped)
    return record


def write_npz_from_folder(output_dir: str, num_samples: int, path: str | None = None, progress: bool = False) -> str:
    """Stack `000000.png` ... into `samples.npz` (`arr_0`, uint8 `[N, H, W, 3]`), the ADM evaluator's input."""
    from tqdm.auto import tqdm

    arrays = []
    for index in tqdm(range(num_samples), desc="samples.npz", unit="image", disable=not progress):
        file = png_path(output_dir, index)
        if not os.path.isfile(file):
            raise FileNotFoundError(f"{file} is missing; rerun the sampler to complete the folder.")
        with PIL.Image.open(file) as image:
            arrays.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
    path = path or os.path.join(output_dir, NPZ_FILE)
    # Through a temporary file: an interrupted write never leaves a truncated .npz for `fid` to read.
    with open(path + ".tmp", "wb") as file:
        np.savez(file, arr_0=np.stack(arrays))
    os.replace(path + ".tmp", path)
    return path


__all__ = [
    "LABEL_SCHEMES",
    "NPZ_FILE",
    "RUN_FILE",
    "SamplingSettings",
    "batch_seed",
    "png_path",
    "sample_class_to_image",
    "sample_labels",
    "to_uint8_images",
    "write_npz_from_folder",
]
