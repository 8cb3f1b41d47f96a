"""
Convert official LlamaGen checkpoints (FoundationVision/LlamaGen) to HF folders.

- Class-to-image GPT (`c2i_{B,L,XL,XXL,3B}_{256,384}.pt`, VA-π outputs) -> `LlamaGenForClassToImage` (`config.json` +
  safetensors). The fused `wqkv` is split by `[dim, kv_dim, kv_dim]` and the q/k rows go from LlamaGen's interleaved
  RoPE pairs to transformers' half-split layout (`permute_interleaved_to_half`); the other keys are renamed.
- Text-to-image GPT (`t2i_XL_stage1_256.pt`, `t2i_XL_stage2_512.pt`) -> `LlamaGenForTextToImage`: the same
  backbone keys, plus `cls_embedding.cap_proj.fc1/fc2` -> `caption_proj.fc1/fc2` (bias-free) and
  `cls_embedding.uncond_embedding` `(120, caption_dim)` -> the `uncond_embedding` buffer. The task is detected from
  these keys (`task=None`); the caption width and slot count are read from their shapes.
- VQ-16 tokenizer (`vq_ds16_c2i.pt`, `vq_ds16_t2i.pt`) -> transformers `JanusVQVAE` inside an `ImageTokenizerProcessor`
  folder. Renames: `conv_blocks` -> `down` (encoder) / `up` (decoder), `res` -> `block`, `mid.0/1/2` ->
  `mid.block_1/attn_1/block_2`; `quantize.codebook_used` (a usage counter) is dropped. This table was checked against
  the official key list (`shared/reference/official-checkpoint-keys.tsv`) and `JanusVQVAE(...).state_dict()`: the
  renamed names and shapes match one to one (343 tensors), including the decoder, whose `up.0` is the first (lowest
  resolution, attention) block in both trees, so no index reversal is needed.

Both loads are strict: missing, unexpected and mis-shaped keys raise a `ValueError` that lists them. Files are read
with `torch.load(weights_only=True)`; only `argparse.Namespace` (the `"args"` entry of DDP training checkpoints) is
allowed beyond tensors and containers.

Usage (see `vapi-trl convert-llamagen --help`):

```python
from vapi_trl.models.llamagen.convert_llamagen_to_hf import convert_llamagen_checkpoints

convert_llamagen_checkpoints("out", gpt_ckpt="c2i_XXL_384.pt", vq_ckpt="vq_ds16_c2i.pt", gpt_model="GPT-XXL",
                             image_size=384)
# -> out/policy (LlamaGenForClassToImage), out/image_tokenizer (ImageTokenizerProcessor)
```
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from transformers import JanusVQVAE, JanusVQVAEConfig

from ..modeling_utils import check_reloaded_state_dict, load_state_dict_strict, read_official_state_dict
from .configuration_llamagen import LlamaGenConfig
from .modeling_llamagen import LlamaGenForClassToImage, LlamaGenForTextToImage, permute_interleaved_to_half

POLICY_SUBFOLDER = "policy"
IMAGE_TOKENIZER_SUBFOLDER = "image_tokenizer"

# Entries of a training checkpoint that may hold the state dict, in the order they are tried.
_STATE_DICT_KEYS = ("model", "module", "state_dict", "ema")

# Official GPT keys that are not parameters of the port. `freqs_cis` is a plain attribute in `gpt.py`, absent from the
# released files; it is dropped if a modified training script saved it as a buffer (the port recomputes the table).
_GPT_DROPPED_KEYS = ("freqs_cis",)
# Official VQ keys that are not weights: a codebook usage counter.
_VQ_DROPPED_KEYS = ("quantize.codebook_used",)

# Conditioning keys that only the text-to-image GPT has (caption MLP and the learned null caption).
_T2I_KEY_PREFIXES = ("cls_embedding.cap_proj.", "cls_embedding.uncond_embedding")

_GPT_RENAMES: list[tuple[str, str]] = [
    (r"^tok_embeddings\.", "model.embed_tokens."),
    (r"^cls_embedding\.embedding_table\.", "class_embed."),
    (r"^cls_embedding\.cap_proj\.", "caption_proj."),
    (r"^cls_embedding\.uncond_embedding$", "uncond_embedding"),
    (r"^layers\.(\d+)\.attention\.wo\.", r"model.layers.\1.self_attn.o_proj."),
    (r"^layers\.(\d+)\.feed_forward\.w1\.", r"model.layers.\1.mlp.gate_proj."),
    (r"^layers\.(\d+)\.feed_forward\.w3\.", r"model.layers.\1.mlp.up_proj."),
    (r"^layers\.(\d+)\.feed_forward\.w2\.", r"model.layers.\1.mlp.down_proj."),
    (r"^layers\.(\d+)\.attention_norm\.", r"model.layers.\1.input_layernorm."),
    (r"^layers\.(\d+)\.ffn_norm\.", r"model.layers.\1.post_attention_layernorm."),
    (r"^norm\.", "model.norm."),
    (r"^output\.", "lm_head."),
]
_WQKV = re.compile(r"^layers\.(\d+)\.attention\.wqkv\.weight$")

_VQ_RENAMES: list[tuple[str, str]] = [
    (r"^encoder\.conv_blocks\.", "encoder.down."),
    (r"^decoder\.conv_blocks\.", "decoder.up."),
    (r"\.res\.(\d+)\.", r".block.\1."),
    (r"\.mid\.0\.", ".mid.block_1."),
    (r"\.mid\.1\.", ".mid.attn_1."),
    (r"\.mid\.2\.", ".mid.block_2."),
]


# ------------------------------------------------------------------------------------------------------------------
# Reading official files
# ------------------------------------------------------------------------------------------------------------------


def load_official_checkpoint(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """
    Read an official LlamaGen `.pt` file and return its flat state dict (name -> tensor, on CPU), with
    `read_official_state_dict`.

    Accepts a raw state dict (FSDP files: `c2i_XXL_384.pt`, `c2i_3B_384.pt`, VA-π outputs) or a training checkpoint
    whose `"model"`, `"module"`, `"state_dict"` or `"ema"` entry holds it (DDP files: `c2i_B_256.pt` ... and the VQ
    files). A `module.` prefix (DDP wrapping) and an `_orig_mod.` prefix (`torch.compile`) are stripped.

    Raises:
        `FileNotFoundError` if `path` is not a file; `ValueError` if the file cannot be read with
        `weights_only=True` or holds no state dict.
    """
    expected = "the official LlamaGen `.pt` file (e.g. c2i_XXL_384.pt or vq_ds16_c2i.pt)"
    return read_official_state_dict(path, _STATE_DICT_KEYS, expected)


# ------------------------------------------------------------------------------------------------------------------
# Key conversion
# ------------------------------------------------------------------------------------------------------------------


def _rename(name: str, table: Sequence[tuple[str, str]]) -> str:
    for pattern, replacement in table:
        name = re.sub(pattern, replacement, name)
    return name


def is_text_to_image_checkpoint(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether an official GPT state dict is the text-to-image variant (caption MLP conditioning)."""
    return any(name.startswith(_T2I_KEY_PREFIXES) for name in state_dict)


def convert_llamagen_gpt_state_dict(
    state_dict: Mapping[str, torch.Tensor], config: LlamaGenConfig
) -> dict[str, torch.Tensor]:
    """
    Official GPT state dict -> `LlamaGenForClassToImage` (`config.task="c2i"`) or `LlamaGenForTextToImage`
    (`config.task="t2i"`) state dict.

    `layers.i.attention.wqkv.weight` `(dim + 2 * kv_dim, dim)` is split into `q_proj`, `k_proj`, `v_proj`; q rows are
    permuted with `num_attention_heads`, k rows with `num_key_value_heads` (interleaved -> half-split RoPE pairs).
    Unknown keys are passed through unchanged so that the strict load reports them.

    Raises:
        `ValueError` when the checkpoint's conditioning (class table or caption MLP) does not match `config.task`, or
        when a `wqkv` does not have the rows `config` implies.
    """
    text_to_image = is_text_to_image_checkpoint(state_dict)
    if text_to_image and config.task != "t2i":
        raise ValueError(
            "This is a LlamaGen text-to-image checkpoint (it has `cls_embedding.cap_proj` / "
            "`cls_embedding.uncond_embedding`, the caption conditioning) but the config has "
            f"task={config.task!r}; convert it with `--task t2i` (or `--task auto`) into a LlamaGenForTextToImage."
        )
    if not text_to_image and config.task == "t2i":
        raise ValueError(
            "The config has task='t2i' but this checkpoint has no caption conditioning (`cls_embedding.cap_proj`); "
            "it is a class-to-image file (c2i_*.pt): convert it with `--task c2i` (or `--task auto`)."
        )
    head_dim = config.head_dim
    q_rows = config.num_attention_heads * head_dim
    kv_rows = config.num_key_value_heads * head_dim
    converted: dict[str, torch.Tensor] = {}
    for name, tensor in state_dict.items():
        if name in _GPT_DROPPED_KEYS:
            continue
        match = _WQKV.match(name)
        if match is None:
            converted[_rename(name, _GPT_RENAMES)] = tensor
            continue
        if tensor.shape[0] != q_rows + 2 * kv_rows:
            raise ValueError(
                f"{name} has {tensor.shape[0]} rows but the config implies dim + 2 * kv_dim = {q_rows} + 2 * {kv_rows}"
                f" (hidden_size={config.hidden_size}, num_attention_heads={config.num_attention_heads}, "
                f"num_key_value_heads={config.num_key_value_heads}). Pick the preset (--gpt_model) or --hidden_size/"
                "--num_attention_heads/--num_key_value_heads of this checkpoint."
            )
        query, key, value = tensor.split([q_rows, kv_rows, kv_rows], dim=0)
        prefix = f"model.layers.{match.group(1)}.self_attn."
        converted[prefix + "q_proj.weight"] = permute_interleaved_to_half(query, config.num_attention_heads)
        converted[prefix + "k_proj.weight"] = permute_interleaved_to_half(key, config.num_key_value_heads)
        converted[prefix + "v_proj.weight"] = value
    return converted


def convert_llamagen_vq_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Official VQ-16 state dict -> `JanusVQVAE` state dict (renames above; drops `quantize.codebook_used`)."""
    return {_rename(name, _VQ_RENAMES): tensor for name, tensor in state_dict.items() if name not in _VQ_DROPPED_KEYS}


# ------------------------------------------------------------------------------------------------------------------
# Configs
# ------------------------------------------------------------------------------------------------------------------


def llamagen_vq_config(
    image_size: int = 384,
    codebook_size: int = 16384,
    codebook_embed_dim: int = 8,
    ch_mult: Sequence[int] = (1, 1, 2, 2, 4),
    z_channels: int = 256,
    base_channels: int = 128,
    num_res_blocks: int = 2,
) -> JanusVQVAEConfig:
    """
    `JanusVQVAEConfig` of the official VQ-16 tokenizer (`VQ_16` in `tokenizer/tokenizer_image/vq_model.py`) for
    `image_size`² images: `num_patches = image_size // 2^(len(ch_mult) - 1)` tokens per side (24 at 384, 16 at 256).
    """
    downsample = 2 ** (len(ch_mult) - 1)
    if image_size % downsample:
        raise ValueError(
            f"image_size={image_size} is not a multiple of the VQ downsampling factor {downsample} "
            f"(2^(len(ch_mult) - 1) with ch_mult={list(ch_mult)})."
        )
    return JanusVQVAEConfig(
        embed_dim=codebook_embed_dim,
        num_embeddings=codebook_size,
        latent_channels=z_channels,
        base_channels=base_channels,
        channel_multiplier=list(ch_mult),
        num_res_blocks=num_res_blocks,
        num_patches=image_size // downsample,
    )


def llamagen_gpt_config(
    gpt_model: str | None = None,
    image_size: int = 384,
    downsample_size: int = 16,
    **overrides: Any,
) -> LlamaGenConfig:
    """
    `LlamaGenConfig` of an official GPT: the preset `gpt_model` (`"GPT-B"` ... `"GPT-3B"`) with
    `block_size = (image_size // downsample_size)²`, updated by `overrides` (config field names, `None` values
    ignored; `task="t2i"` defaults `cls_token_num` to 120). Without a preset, `hidden_size`, `num_hidden_layers` and
    `num_attention_heads` must be given.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if image_size % downsample_size:
        raise ValueError(f"image_size={image_size} is not a multiple of the VQ downsampling {downsample_size}.")
    overrides.setdefault("block_size", (image_size // downsample_size) ** 2)
    overrides.setdefault("task", "c2i")
    if overrides["task"] == "t2i":
        overrides.setdefault("cls_token_num", 120)  # official T2I: 120 flan-T5 slots
    if gpt_model is not None:
        return LlamaGenConfig.from_preset(gpt_model, **overrides)
    required = ("hidden_size", "num_hidden_layers", "num_attention_heads")
    missing = [name for name in required if name not in overrides]
    if missing:
        raise ValueError(
            f"Without a size preset (--gpt_model GPT-XXL, ...), give the architecture explicitly; missing {missing} "
            "(--hidden_size, --num_hidden_layers, --num_attention_heads)."
        )
    return LlamaGenConfig(**overrides)


def _describe_gpt_shapes(state_dict: Mapping[str, torch.Tensor]) -> str:
    layers = {int(m.group(1)) for name in state_dict if (m := re.match(r"^layers\.(\d+)\.", name))}
    embedding = state_dict.get("tok_embeddings.weight")
    classes = state_dict.get("cls_embedding.embedding_table.weight")
    uncond = state_dict.get("cls_embedding.uncond_embedding")
    parts = [f"{len(layers)} layers"]
    if embedding is not None:
        parts.append(f"dim {embedding.shape[1]}, vocab {embedding.shape[0]}")
    if classes is not None:
        parts.append(f"{classes.shape[0] - 1} classes (+1 null)")
    if uncond is not None:
        parts.append(f"{uncond.shape[0]} caption slots of width {uncond.shape[1]}")
    return ", ".join(parts)


def text_to_image_overrides(state_dict: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """Config fields read from a T2I state dict: `task="t2i"`, `cls_token_num` and `caption_dim` from the shape of
    `cls_embedding.uncond_embedding` `(cls_token_num, caption_dim)` (official: 120 slots of flan-T5-XL, 2048)."""
    uncond = state_dict.get("cls_embedding.uncond_embedding")
    if uncond is None or uncond.dim() != 2:
        raise ValueError(
            "A LlamaGen T2I checkpoint needs `cls_embedding.uncond_embedding` of shape (cls_token_num, caption_dim)."
        )
    return {"task": "t2i", "cls_token_num": int(uncond.shape[0]), "caption_dim": int(uncond.shape[1])}


# ------------------------------------------------------------------------------------------------------------------
# Strict loading
# ------------------------------------------------------------------------------------------------------------------


def _cast(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return dict(state_dict)
    return {name: t.to(dtype) if t.is_floating_point() else t for name, t in state_dict.items()}


def build_llamagen_policy(
    state_dict: Mapping[str, torch.Tensor], config: LlamaGenConfig, dtype: torch.dtype | None = torch.float32
) -> LlamaGenForClassToImage | LlamaGenForTextToImage:
    """
    Official GPT state dict -> the policy of `config.task` (`LlamaGenForClassToImage` for c2i,
    `LlamaGenForTextToImage` for t2i), in eval mode, loaded strictly without a random init.

    Args:
        state_dict: the official keys (`load_official_checkpoint`).
        config: the architecture (`llamagen_gpt_config(..., task=...)`).
        dtype: cast floating weights (and T2I's `uncond_embedding` buffer) to this dtype; `None` keeps the
            checkpoint's.
    """
    converted = _cast(convert_llamagen_gpt_state_dict(state_dict, config), dtype)
    if dtype is not None:
        config.dtype = dtype
    text_to_image = config.task == "t2i"
    with torch.device("meta"):
        model = LlamaGenForTextToImage(config) if text_to_image else LlamaGenForClassToImage(config)
    if text_to_image:
        condition = f"{config.cls_token_num} caption slots of width {config.caption_dim}"
        preset = "--gpt_model preset (GPT-XL for t2i_XL_*.pt) or set --hidden_size/--num_hidden_layers/--num_attention_heads/--vocab_size"
    else:
        condition = f"{config.num_classes} classes"
        preset = "--gpt_model preset or set --hidden_size/--num_hidden_layers/--num_attention_heads/--vocab_size/--num_classes"
    hint = (
        f"The checkpoint has {_describe_gpt_shapes(state_dict)}; the config has {config.num_hidden_layers} layers, "
        f"dim {config.hidden_size}, vocab {config.vocab_size}, {condition}. Pick the matching {preset}."
    )
    load_state_dict_strict(model, converted, "LlamaGen T2I GPT" if text_to_image else "LlamaGen GPT", hint)
    return model.eval()


def build_llamagen_vq(state_dict: Mapping[str, torch.Tensor], config: JanusVQVAEConfig) -> JanusVQVAE:
    """Official VQ-16 state dict -> fp32 `JanusVQVAE` (eval mode), loaded strictly without a random init."""
    converted = _cast(convert_llamagen_vq_state_dict(state_dict), torch.float32)
    with torch.device("meta"):
        model = JanusVQVAE(config)
    hint = (
        f"The VQ config has codebook {config.num_embeddings}x{config.embed_dim}, ch_mult "
        f"{list(config.channel_multiplier)}, z_channels {config.latent_channels}; set --codebook_size, "
        "--codebook_embed_dim, --ch_mult, --z_channels to the tokenizer's values."
    )
    load_state_dict_strict(model, converted, "LlamaGen VQ", hint)
    return model.eval()


# ------------------------------------------------------------------------------------------------------------------
# End to end
# ------------------------------------------------------------------------------------------------------------------


# The image sides of the official releases, named when `image_size` is missing.
RELEASE_IMAGE_SIZES = (
    "C2I 256 for c2i_B_256.pt / c2i_L_256.pt, 384 for c2i_L_384.pt / c2i_XL_384.pt / c2i_XXL_384.pt / c2i_3B_384.pt "
    "(vq_ds16_c2i.pt); T2I 256 for t2i_XL_stage1_256.pt, 512 for t2i_XL_stage2_512.pt (vq_ds16_t2i.pt)"
)


def convert_llamagen_checkpoints(
    output_dir: str | os.PathLike,
    gpt_ckpt: str | os.PathLike | None = None,
    vq_ckpt: str | os.PathLike | None = None,
    gpt_model: str | None = None,
    image_size: int | None = None,
    gpt_overrides: Mapping[str, Any] | None = None,
    vq_overrides: Mapping[str, Any] | None = None,
    dtype: torch.dtype | None = torch.float32,
    verify: bool = True,
    task: str | None = None,
) -> dict[str, str]:
    """
    Convert an official GPT and/or VQ checkpoint and save them under `output_dir`:

    - `output_dir/policy/`: `LlamaGenForClassToImage` (C2I) or `LlamaGenForTextToImage` (T2I) `save_pretrained`
      (`config.json` + `model.safetensors`);
    - `output_dir/image_tokenizer/`: `ImageTokenizerProcessor.save_pretrained` (`processor_config.json` +
      `vq_model/`), for `image_size`² images.

    Args:
        image_size: required, the image side the checkpoint was trained at (`RELEASE_IMAGE_SIZES`): no tensor
            records it, and a wrong value converts without error.
        gpt_overrides: `LlamaGenConfig` fields over the preset (`hidden_size`, `num_hidden_layers`, ...).
        vq_overrides: `llamagen_vq_config` arguments (`codebook_size`, `codebook_embed_dim`, `ch_mult`, `z_channels`).
        dtype: dtype of the saved policy weights (`None` keeps the checkpoint's); the VQ is always fp32.
        verify: reload what was written and compare every tensor.
        task: `"c2i"`, `"t2i"`, or `None` to detect it from the checkpoint's conditioning keys. For T2I, the caption
            slots and width come from `cls_embedding.uncond_embedding`; the T5 encoder is not part of the checkpoint
            (build it with `T5CaptionEncoder.from_text_encoder_pretrained("google/flan-t5-xl")`).

    Returns:
        `{"policy": path, "image_tokenizer": path}` for what was written.
    """
    from ..image_tokenizer import ImageTokenizerProcessor

    if gpt_ckpt is None and vq_ckpt is None:
        raise ValueError(
            "Nothing to convert: give a GPT checkpoint (--gpt_ckpt), a VQ checkpoint (--vq_ckpt) or both."
        )
    if image_size is None:
        # RoPE keeps no table in the file and every weight shape is resolution-free: a wrong side converts cleanly.
        raise ValueError(
            "--image_size is required: the checkpoint does not record the image side it was trained at, and a wrong "
            f"one converts without error (e.g. a 576-token grid for a 256-px model). Releases: {RELEASE_IMAGE_SIZES}."
        )
    output_dir = os.fspath(output_dir)
    written: dict[str, str] = {}
    vq_config = llamagen_vq_config(image_size=image_size, **dict(vq_overrides or {}))
    if task not in (None, "auto", "c2i", "t2i"):
        raise ValueError(f"task must be 'c2i', 't2i' or None (auto-detect), got {task!r}.")
    if gpt_ckpt is not None:
        state_dict = load_official_checkpoint(gpt_ckpt)
        text_to_image = is_text_to_image_checkpoint(state_dict) if task in (None, "auto") else task == "t2i"
        overrides = dict(gpt_overrides or {})
        if text_to_image and is_text_to_image_checkpoint(state_dict):
            for key, value in text_to_image_overrides(state_dict).items():
                overrides.setdefault(key, value)
        overrides.setdefault("task", "t2i" if text_to_image else "c2i")
        downsample = 2 ** (len(vq_config.channel_multiplier) - 1)
        config = llamagen_gpt_config(gpt_model, image_size=image_size, downsample_size=downsample, **overrides)
        if vq_ckpt is not None and config.vocab_size != vq_config.num_embeddings:
            raise ValueError(
                f"The GPT vocabulary ({config.vocab_size}) differs from the VQ codebook ({vq_config.num_embeddings});"
                " set --vocab_size and --codebook_size to the same value."
            )
        model = build_llamagen_policy(state_dict, config, dtype=dtype)
        del state_dict
        model.config.name_or_path = os.path.basename(os.fspath(gpt_ckpt))
        path = os.path.join(output_dir, POLICY_SUBFOLDER)
        model.save_pretrained(path)
        if verify:
            reloaded = type(model).from_pretrained(path, dtype=dtype or "auto")
            check_reloaded_state_dict(model.state_dict(), reloaded.state_dict(), path)
            del reloaded
        del model
        written["policy"] = path
    if vq_ckpt is not None:
        vq_model = build_llamagen_vq(load_official_checkpoint(vq_ckpt), vq_config)
        processor = ImageTokenizerProcessor.from_vq_model(vq_model, image_size=image_size)
        path = os.path.join(output_dir, IMAGE_TOKENIZER_SUBFOLDER)
        processor.save_pretrained(path)
        if verify:
            reloaded = ImageTokenizerProcessor.from_pretrained(path)
            check_reloaded_state_dict(processor.vq_model.state_dict(), reloaded.vq_model.state_dict(), path)
        written["image_tokenizer"] = path
    return written


__all__ = [
    "IMAGE_TOKENIZER_SUBFOLDER",
    "POLICY_SUBFOLDER",
    "build_llamagen_policy",
    "build_llamagen_vq",
    "convert_llamagen_checkpoints",
    "convert_llamagen_gpt_state_dict",
    "convert_llamagen_vq_state_dict",
    "is_text_to_image_checkpoint",
    "llamagen_gpt_config",
    "llamagen_vq_config",
    "load_official_checkpoint",
    "load_state_dict_strict",
    "text_to_image_overrides",
]
