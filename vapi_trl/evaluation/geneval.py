"""
GenEval sampling for text-to-image policies (LlamaGen T2I, Janus-Pro), in the layout of the GenEval repository
(`generation/diffusers_generate.py`), scored there with its Mask2Former detector (algorithm.md §6):

```
<output_dir>/00000/metadata.jsonl      # the prompt's line of evaluation_metadata.jsonl, copied as is
<output_dir>/00000/samples/0000.png    # N images per prompt (GenEval: 4)
<output_dir>/00000/grid.png            # optional: the N images side by side
<output_dir>/run.json                  # policy family, paths, CFG / temperature / top-k / top-p, seed, versions
```

KV-cache autoregressive sampling (`policy.sample`: CFG, temperature, top-k, top-p), VQ decoding at the model
resolution, uint8 = clamp(127.5 * x + 128, 0, 255) truncated. Resumable and reproducible: prompt `i`, chunk `c` samples
with its own generator seeded from `(seed, i, c)`; a rerun skips prompt folders that are complete, and refuses to mix
settings with an existing `run.json`. Janus-Pro protocol: CFG 5, τ = 1, no top-k, 384². LlamaGen T2I: the official
script defaults to CFG 7.5, top-k 2000, τ = 1 at 256² (the blog figures use CFG 5, top-k 0), so `run.json` records the
setting used.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from .sample import _autocast, _check_sampling, _prepare_run_folder, _save_png, to_uint8_images

METADATA_FILE = "metadata.jsonl"
SAMPLES_SUBFOLDER = "samples"
GRID_FILE = "grid.png"
FAMILIES = ("janus", "llamagen-t2i")

# Sampling defaults per policy family when a setting is not given (algorithm.md §6).
FAMILY_DEFAULTS: dict[str, dict[str, float | int]] = {
    "janus": {"cfg_scale": 5.0, "temperature": 1.0, "top_k": 0, "top_p": 1.0},
    "llamagen-t2i": {"cfg_scale": 7.5, "temperature": 1.0, "top_k": 2000, "top_p": 1.0},
}

# Settings that change the images: a resumed run must use the same values.
_REPRODUCIBILITY_KEYS = (
    "family", "seed", "num_images", "batch_size", "cfg_scale", "temperature", "top_k", "top_p", "bf16", "resize",
    "policy_fingerprint", "processing_class_fingerprint", "image_tokenizer_fingerprint",
)  # fmt: skip
# Entries of a GenEval folder that `sample_geneval` writes (and `overwrite=True` may delete): the prompt folders.
_OWNED_ENTRY = re.compile(r"^(\d{5}|run\.json\.tmp)$")


@dataclass
class GenEvalSettings:
    """
    What `sample_geneval` does; written to `run.json`.

    Args:
        num_images: images per prompt (GenEval: 4).
        batch_size: images per `sample` call (chunks of one prompt's images); part of the seeding, keep it fixed.
        seed: global seed.
        cfg_scale, temperature, top_k, top_p: sampling settings; `None` takes the family default (`FAMILY_DEFAULTS`).
        bf16: run the policy under bf16 autocast.
        resize: side of the saved images (bicubic, no antialias); `None` keeps the decoder resolution.
        grid: also write `grid.png` per prompt.
        family: `"janus"` or `"llamagen-t2i"` (set by `load_text_to_image_policy`).
    """

    num_images: int = 4
    batch_size: int = 4
    seed: int = 0
    cfg_scale: float | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    bf16: bool = False
    resize: int | None = None
    grid: bool = True
    family: str | None = None
    model_path: str | None = None
    image_tokenizer_path: str | None = None
    text_encoder_path: str | None = None
    metadata_path: str | None = None

    def resolve(self) -> GenEvalSettings:
        """Fill unset sampling values with the family defaults and validate; returns `self`."""
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}.")
        for key, value in FAMILY_DEFAULTS[self.family].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.num_images < 1 or self.batch_size < 1:
            raise ValueError(f"num_images ({self.num_images}) and batch_size ({self.batch_size}) must be positive.")
        _check_sampling(self.temperature, self.top_k, self.top_p, self.resize, self.cfg_scale)
        return self


def read_geneval_metadata(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """
    Read GenEval's `evaluation_metadata.jsonl` (one JSON object per line, at least `prompt`; tags, `include`, ...).

    Returns:
        `(line, record)` per non-empty line: the raw line (copied into each prompt folder unchanged) and its parsed
        object. Raises a `ValueError` naming the line for invalid JSON or a missing/empty `prompt`.
    """
    entries = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path}:{number} is not valid JSON ({error.msg}).") from error
            if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
                raise ValueError(f"{path}:{number} has no non-empty string `prompt`: {line[:120]}")
            entries.append((line, record))
    if not entries:
        raise ValueError(f"{path} holds no prompt.")
    return entries


def prompt_seed(seed: int, prompt_index: int, chunk_index: int) -> int:
    """Seed of chunk `chunk_index` of prompt `prompt_index`: independent streams per `(seed, prompt, chunk)`."""
    state = np.random.SeedSequence([seed, prompt_index, chunk_index]).generate_state(1, dtype=np.uint64)[0]
    return int(state >> 1)


def prompt_folder(output_dir: str, index: int) -> str:
    """`<output_dir>/<index:05d>`, GenEval's folder name."""
    return os.path.join(output_dir, f"{index:05d}")


def is_prompt_complete(folder: str, num_images: int, grid: bool) -> bool:
    """Whether `folder` holds `metadata.jsonl`, `samples/0000.png` ... and (if `grid`) `grid.png`."""
    files = [METADATA_FILE, *(os.path.join(SAMPLES_SUBFOLDER, f"{i:04d}.png") for i in range(num_images))]
    files += [GRID_FILE] if grid else []
    return all(os.path.isfile(os.path.join(folder, name)) for name in files)


def _check_prompt_folders(output_dir: str, metadata: Sequence[tuple[str, dict[str, Any]]]) -> None:
    """Refuse (before anything is written) prompt folders whose `metadata.jsonl` holds another prompt: folders are
    matched by index, so another metadata file must not reuse them."""
    from vapi_trl.provenance import OutputFolderError

    for index, (line, _) in enumerate(metadata):
        path = os.path.join(prompt_folder(output_dir, index), METADATA_FILE)
        if not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as handle:
            done_line = handle.read().strip()
        if done_line != line:
            raise OutputFolderError(
                f"{os.path.dirname(path)!r} holds the samples of another prompt ({done_line[:80]!r}, this run's is "
                f"{line[:80]!r}); resuming would mix them. Pick another output folder, or pass --overwrite to "
                "replace them."
            )


def _grid(images: np.ndarray) -> np.ndarray:
    """uint8 `[N, H, W, 3]` -> one row `[H, N * W, 3]` (GenEval's `grid.png` with the default `--batch_size` rows)."""
    return np.concatenate(list(images), axis=1)


@torch.no_grad()
def sample_geneval(
    policy: Any,
    processing_class: Any,
    image_tokenizer: Any,
    metadata: Sequence[tuple[str, dict[str, Any]]],
    output_dir: str | os.PathLike,
    settings: GenEvalSettings,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """
    Generate `settings.num_images` images per GenEval prompt and write the GenEval folder layout.

    Args:
        policy: a text-to-image policy with `sample(**condition, cfg_scale, temperature, top_k, top_p, generator)`
            -> ids `[B, N]` (`LlamaGenForTextToImage`, `JanusForImageGeneration`), on its device, eval mode.
        processing_class: its family processor (`LlamaGenProcessor`, `JanusImageGenerationProcessor`), or the text
            processor it is built from (`T5CaptionEncoder`, the Janus tokenizer; `processor_for_policy`).
        image_tokenizer: an `ImageTokenizerProcessor` (`decode(ids)` -> `[B, 3, H, W]` in ≈[-1, 1]).
        metadata: `(line, record)` pairs from `read_geneval_metadata`.
        output_dir: GenEval output folder; created if needed.
        settings: `GenEvalSettings` with `family` set (unset sampling values take the family defaults).
        progress: show a tqdm bar.
        overwrite: delete the prompt folders and `run.json` already in `output_dir` instead of refusing a folder
            that is not a resumable run of the same models, prompts and settings.

    Returns:
        The run record (also in `run.json`) with `generated_prompts` / `skipped_prompts` counts of this call.
    """
    from tqdm.auto import tqdm

    import vapi_trl
    from vapi_trl.models.processing_utils import processor_for_policy
    from vapi_trl.provenance import fingerprint

    settings.resolve()
    output_dir = os.fspath(output_dir)
    record = {**asdict(settings), "num_prompts": len(metadata), "vapi_trl_version": vapi_trl.__version__}
    record["metadata_sha256"] = hashlib.sha256("\n".join(line for line, _ in metadata).encode()).hexdigest()
    record["policy_fingerprint"] = fingerprint(policy, progress)
    record["processing_class_fingerprint"] = fingerprint(processing_class, progress)
    record["image_tokenizer_fingerprint"] = fingerprint(image_tokenizer, progress)
    if not overwrite:
        _check_prompt_folders(output_dir, metadata)
    _prepare_run_folder(output_dir, record, _REPRODUCIBILITY_KEYS, _OWNED_ENTRY, overwrite, what="GenEval samples")

    device = next(policy.parameters()).device
    policy.eval()
    processor = processor_for_policy(policy, processing_class)
    processor.prepare_policy(policy)
    autocast = _autocast(device, settings.bf16)
    generated = skipped = 0
    for index, (line, entry) in enumerate(tqdm(metadata, desc="GenEval prompts", unit="prompt", disable=not progress)):
        folder = prompt_folder(output_dir, index)
        if is_prompt_complete(folder, settings.num_images, settings.grid):
            skipped += 1
            continue
        os.makedirs(os.path.join(folder, SAMPLES_SUBFOLDER), exist_ok=True)
        with open(os.path.join(folder, METADATA_FILE), "w", encoding="utf-8") as handle:
            handle.write(line + "\n")
        images = []
        for chunk, start in enumerate(range(0, settings.num_images, settings.batch_size)):
            count = min(settings.batch_size, settings.num_images - start)
            condition = processor.prepare_condition([{"prompt": entry["prompt"]}] * count, device=device)
            generator = torch.Generator(device=device).manual_seed(prompt_seed(settings.seed, index, chunk))
            with autocast:
                ids = policy.sample(
                    **condition,
                    cfg_scale=settings.cfg_scale,
                    temperature=settings.temperature,
                    top_k=settings.top_k,
                    top_p=settings.top_p,
                    generator=generator,
                )
            images.append(to_uint8_images(image_tokenizer.decode(ids), settings.resize))
        images = np.concatenate(images)
        for number, image in enumerate(images):
            _save_png(image, os.path.join(folder, SAMPLES_SUBFOLDER, f"{number:04d}.png"))
        if settings.grid:
            _save_png(_grid(images), os.path.join(folder, GRID_FILE))
        generated += 1
    record.update(generated_prompts=generated, skipped_prompts=skipped)
    return record


def _read_config(path: str) -> dict[str, Any]:
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise ValueError(f"{path!r} is not a model folder (no config.json).")
    with open(config_file) as handle:
        return json.load(handle)


def detect_family(model_path: str) -> str:
    """`"janus"` (config `model_type` janus) or `"llamagen-t2i"` (`vapi_llamagen` with task t2i); raises otherwise."""
    config = _read_config(model_path)
    model_type, task = config.get("model_type"), config.get("task")
    if model_type == "janus":
        return "janus"
    if model_type == "vapi_llamagen" and task == "t2i":
        return "llamagen-t2i"
    raise ValueError(
        f"{model_path!r} is not a text-to-image policy (model_type={model_type!r}, task={task!r}): GenEval sampling "
        "needs a Janus(-Pro) checkpoint or a LlamaGen T2I policy (convert t2i_*.pt with `vapi-trl convert-llamagen`)."
    )


def load_text_to_image_policy(
    model_path: str,
    image_tokenizer_path: str | None = None,
    text_encoder_name_or_path: str | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    text_encoder_dtype: torch.dtype = torch.bfloat16,
) -> tuple[Any, Any, Any, dict[str, str | None]]:
    """
    Load a T2I policy folder with what sampling needs, by family (`detect_family`):

    - Janus: `JanusForImageGeneration`, its tokenizer (same folder), and the image tokenizer from its own VQ.
    - LlamaGen T2I: `LlamaGenForTextToImage`; the T5 encoder from `text_encoder_name_or_path` (a `T5CaptionEncoder`
      folder or a T5 checkpoint), else the `T5CaptionEncoder` saved with the policy by training, else
      `google/flan-t5-xl`; the image tokenizer from `image_tokenizer_path`, else `<model_path>/../image_tokenizer`
      (the `convert-llamagen` layout).

    Returns:
        `(policy, processing_class, image_tokenizer, info)` on `device`, eval mode; `info` has `family` and the paths.
    """
    from vapi_trl.models import ImageTokenizerProcessor

    family = detect_family(model_path)
    info: dict[str, str | None] = {"family": family, "image_tokenizer_path": image_tokenizer_path}
    load_kwargs = {"dtype": dtype} if dtype is not None else {}
    if family == "janus":
        from transformers import AutoTokenizer

        from vapi_trl.models import JanusForImageGeneration, janus_image_tokenizer_from_model

        policy = JanusForImageGeneration.from_pretrained(model_path, **load_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(text_encoder_name_or_path or model_path)
        policy.set_special_token_ids(tokenizer)
        image_tokenizer = (
            ImageTokenizerProcessor.from_pretrained(image_tokenizer_path)
            if image_tokenizer_path
            else janus_image_tokenizer_from_model(policy)
        )
        info["text_encoder_path"] = text_encoder_name_or_path or model_path
        processing_class = tokenizer
    else:
        from vapi_trl.models.llamagen.text_encoder import load_caption_encoder
        from vapi_trl.models import LlamaGenForTextToImage

        policy = LlamaGenForTextToImage.from_pretrained(model_path, **load_kwargs)
        if image_tokenizer_path is None:
            sibling = os.path.join(os.path.dirname(os.path.abspath(model_path)), "image_tokenizer")
            if not os.path.isfile(os.path.join(sibling, "processor_config.json")):
                raise ValueError(
                    f"No image tokenizer for {model_path!r}: pass --image_tokenizer_path (the image_tokenizer folder "
                    "of `vapi-trl convert-llamagen`)."
                )
            image_tokenizer_path = info["image_tokenizer_path"] = sibling
        image_tokenizer = ImageTokenizerProcessor.from_pretrained(image_tokenizer_path)
        if text_encoder_name_or_path is None:
            saved = os.path.isfile(os.path.join(model_path, "processor_config.json"))
            text_encoder_name_or_path = model_path if saved else "google/flan-t5-xl"
        dtype_name = str(text_encoder_dtype).removeprefix("torch.")
        processing_class = load_caption_encoder(text_encoder_name_or_path, policy.config.cls_token_num, dtype_name)
        processing_class.to(device)
        info["text_encoder_path"] = text_encoder_name_or_path
    policy = policy.to(device).eval()
    image_tokenizer = image_tokenizer.to(device)
    image_tokenizer.check_compatible(policy.codebook_size, policy.num_image_tokens)
    return policy, processing_class, image_tokenizer, info


__all__ = [
    "FAMILIES",
    "FAMILY_DEFAULTS",
    "GRID_FILE",
    "METADATA_FILE",
    "SAMPLES_SUBFOLDER",
    "GenEvalSettings",
    "detect_family",
    "is_prompt_complete",
    "load_text_to_image_policy",
    "prompt_folder",
    "prompt_seed",
    "read_geneval_metadata",
    "sample_geneval",
]
