"""
Convert official VAR checkpoints (FoundationVision/VAR: `vae_ch160v4096z32.pth`, `var_d{16,20,24,30}.pth`) to HF
folders.

- Tokenizer -> `VARVQVAE` inside a `VARImageTokenizerProcessor` folder. Names are identical to the official
  `VQVAE.state_dict()`; nothing is renamed or dropped.
- Transformer -> `VARForClassToImage`. Names are identical; the derived buffers `lvl_1L`, `attn_bias_for_masking` and
  `blocks.i.attn.zero_k_bias` are checked against the values recomputed from `patch_nums` (an error if they differ,
  e.g. another scale list) and dropped. The tokenizer's `quantize.embedding` and `quantize.quant_resi.*` are copied
  into the policy's frozen `quantize` (its teacher-forcing input is rebuilt from ids), so the VAE file is required.

The architecture is read from the tensors (depth, width, classes, codebook, FFN ratio, `shared_aln`, `attn_l2_norm`
from the presence of `scale_mul_1H11`, `patch_nums` from `lvl_1L`, VAE widths and Phi sharing); a model without
`scale_mul_1H11` (dot-product attention) records no head count, so it must be given (`num_attention_heads`). Loads
are strict: missing, unexpected and mis-shaped keys raise a `ValueError`. Files are read with
`torch.load(weights_only=True)`; outputs are safetensors.

```python
from vapi_trl.models.var.convert_var_to_hf import convert_var_checkpoints

convert_var_checkpoints("var-d16", var_ckpt="var_d16.pth", vae_ckpt="vae_ch160v4096z32.pth")
# -> var-d16/policy (VARForClassToImage), var-d16/image_tokenizer (VARImageTokenizerProcessor)
```
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..modeling_utils import check_reloaded_state_dict, load_state_dict_strict, read_official_state_dict
from .configuration_var import VAR_PATCH_NUMS_256, VARConfig, VARVQVAEConfig
from .modeling_var import VARForClassToImage, block_causal_mask, scale_levels
from .modeling_var_vqvae import VARVQVAE
from .processing_var import VARImageTokenizerProcessor

POLICY_SUBFOLDER = "policy"
IMAGE_TOKENIZER_SUBFOLDER = "image_tokenizer"

# Entries of a training checkpoint that may hold the state dict, in the order they are tried.
_STATE_DICT_KEYS = ("model", "module", "state_dict", "var_wo_ddp", "vae_wo_ddp")
_ZERO_K_BIAS = re.compile(r"^blocks\.\d+\.attn\.zero_k_bias$")


def load_official_state_dict(path: str | os.PathLike, what: str = "VAR") -> dict[str, torch.Tensor]:
    """
    Read an official `.pth` (its flat state dict, on CPU) with `read_official_state_dict`; unwraps
    `model`/`module`/`state_dict`/`var_wo_ddp`/`vae_wo_ddp` entries.

    Raises:
        `FileNotFoundError` if `path` is not a file; `ValueError` naming the file if it is truncated, corrupt, not a
        PyTorch checkpoint, or holds no state dict of tensors.
    """
    expected = f"the official {what} file (e.g. vae_ch160v4096z32.pth or var_d16.pth)"
    return read_official_state_dict(path, _STATE_DICT_KEYS, expected)


_ARCHITECTURE_HINT = "Check the architecture arguments (patch_nums, heads) or the file."
# Tensors every official file of each kind has: checked first, so another model's file gets a message, not a KeyError.
_REQUIRED_VAE_KEYS = ("quantize.embedding.weight", "encoder.conv_in.weight", "quant_conv.weight")
_REQUIRED_VAR_KEYS = ("class_emb.weight", "head.weight", "word_embed.weight", "blocks.0.ffn.fc1.weight")


def _require_keys(state_dict: Mapping[str, torch.Tensor], keys: Sequence[str], path: Any, what: str) -> None:
    missing = [key for key in keys if key not in state_dict]
    if missing:
        hint = ""
        if any(key.startswith(("tok_embeddings.", "cls_embedding.", "layers.")) for key in state_dict):
            hint = " It looks like a LlamaGen GPT checkpoint: convert it with `vapi-trl convert-llamagen`."
        elif any(key.startswith(("encoder.down.", "decoder.up.")) for key in state_dict) and what == "VAR transformer":
            hint = " It looks like a VQ-VAE file: pass it as --vae_ckpt."
        raise ValueError(
            f"{os.fspath(path)!r} is not an official {what} checkpoint: it has no {missing} (first keys: "
            f"{sorted(state_dict)[:5]}).{hint}"
        )


# ---------------------------------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------------------------------


def infer_vqvae_config(
    state_dict: Mapping[str, torch.Tensor], patch_nums: Sequence[int] | None = None, **overrides: Any
) -> VARVQVAEConfig:
    """`VARVQVAEConfig` from the tensors of an official VQVAE state dict (Phi ratio `quant_resi`: 0.5 if present)."""
    vocab_size, z_channels = state_dict["quantize.embedding.weight"].shape
    ch = state_dict["encoder.conv_in.weight"].shape[0]
    levels = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"^encoder\.down\.(\d+)\.", k))})
    ch_mult = [state_dict[f"encoder.down.{i}.block.0.conv1.weight"].shape[0] // ch for i in levels]
    num_res_blocks = len({k.split(".")[4] for k in state_dict if k.startswith("encoder.down.0.block.")})
    phi_keys = [k for k in state_dict if k.startswith("quantize.quant_resi.") and k.endswith(".weight")]
    if not phi_keys:
        share, counts, ratio = 4, 0, 0.0
    elif any(".qresi_ls." in k for k in phi_keys):
        share, counts, ratio = len(phi_keys), 0, 0.5
    elif any(".qresi." in k for k in phi_keys):
        share, counts, ratio = 1, 0, 0.5
    else:
        share, counts, ratio = 0, len(phi_keys), 0.5
    num_scales = (
        state_dict["quantize.ema_vocab_hit_SV"].shape[0] if "quantize.ema_vocab_hit_SV" in state_dict else None
    )
    if patch_nums is None:
        patch_nums = VAR_PATCH_NUMS_256
    if num_scales is not None and len(patch_nums) != num_scales:
        raise ValueError(
            f"The VQVAE checkpoint has {num_scales} scales (`quantize.ema_vocab_hit_SV`) but "
            f"patch_nums={list(patch_nums)} has {len(patch_nums)}; pass the checkpoint's `patch_nums`."
        )
    fields: dict[str, Any] = {
        "vocab_size": vocab_size, "z_channels": z_channels, "ch": ch, "ch_mult": ch_mult,
        "num_res_blocks": num_res_blocks,
        "using_sa": any(k.startswith(f"encoder.down.{levels[-1]}.attn.") for k in state_dict),
        "using_mid_sa": "encoder.mid.attn_1.qkv.weight" in state_dict,
        "in_channels": state_dict["encoder.conv_in.weight"].shape[1],
        "quant_conv_ks": state_dict["quant_conv.weight"].shape[-1],
        "patch_nums": list(patch_nums), "quant_resi": ratio, "share_quant_resi": share, "default_qresi_counts": counts,
    }  # fmt: skip
    if share == 0 and counts == len(patch_nums):
        fields["default_qresi_counts"] = 0
    return VARVQVAEConfig(**{**fields, **overrides})


def convert_vqvae_state_dict(state_dict: Mapping[str, torch.Tensor], config: VARVQVAEConfig) -> VARVQVAE:
    """Build `VARVQVAE(config)` and load the official tensors strictly (names are identical)."""
    with torch.device("meta"):
        model = VARVQVAE(config)
    load_state_dict_strict(model, {k: v.float() for k, v in state_dict.items()}, "VAR VQ-VAE", _ARCHITECTURE_HINT)
    return model.eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------------------------------
# Transformer
# ---------------------------------------------------------------------------------------------------------------------


def patch_nums_from_levels(lvl_1L: torch.Tensor) -> list[int]:
    """Side of each scale from the official `lvl_1L` `(1, L)` (the scale index of every position)."""
    counts = torch.bincount(lvl_1L.reshape(-1).long()).tolist()
    sides = [math.isqrt(count) for count in counts]
    if any(side * side != count for side, count in zip(sides, counts)):
        raise ValueError(f"`lvl_1L` scale sizes {counts} are not squares; the checkpoint is not a VAR pyramid.")
    return sides


def _depth(state_dict: Mapping[str, torch.Tensor]) -> int:
    return len({int(m.group(1)) for k in state_dict if (m := re.match(r"^blocks\.(\d+)\.", k))})


def infer_var_config(
    state_dict: Mapping[str, torch.Tensor], vq_config: VARVQVAEConfig | None = None, **overrides: Any
) -> VARConfig:
    """`VARConfig` from the tensors of an official VAR state dict (and the tokenizer's quantizer settings)."""
    depth = len({int(m.group(1)) for k in state_dict if (m := re.match(r"^blocks\.(\d+)\.", k))})
    num_rows, hidden = state_dict["class_emb.weight"].shape
    attn_l2_norm = "blocks.0.attn.scale_mul_1H11" in state_dict
    heads = state_dict["blocks.0.attn.scale_mul_1H11"].shape[1] if attn_l2_norm else depth
    if "lvl_1L" in state_dict:
        patch_nums = patch_nums_from_levels(state_dict["lvl_1L"])
    else:
        patch_nums = list(vq_config.patch_nums) if vq_config is not None else list(VAR_PATCH_NUMS_256)
    fields: dict[str, Any] = {
        "vocab_size": state_dict["head.weight"].shape[0], "vae_embed_dim": state_dict["word_embed.weight"].shape[1],
        "hidden_size": hidden, "num_hidden_layers": depth, "num_attention_heads": heads,
        "mlp_ratio": state_dict["blocks.0.ffn.fc1.weight"].shape[0] / hidden,
        "shared_aln": "shared_ada_lin.1.weight" in state_dict, "attn_l2_norm": attn_l2_norm,
        "num_classes": num_rows - 1, "patch_nums": patch_nums,
    }  # fmt: skip
    if vq_config is not None:
        fields.update(
            quant_resi=vq_config.quant_resi, share_quant_resi=vq_config.share_quant_resi,
            default_qresi_counts=vq_config.default_qresi_counts,
        )  # fmt: skip
    return VARConfig(**{**fields, **overrides})


def _check_derived_buffers(state_dict: Mapping[str, torch.Tensor], config: VARConfig) -> None:
    patch_nums = list(config.patch_nums)
    if "lvl_1L" in state_dict and not torch.equal(state_dict["lvl_1L"].reshape(-1).long(), scale_levels(patch_nums)):
        raise ValueError(f"The checkpoint's `lvl_1L` does not match patch_nums={patch_nums}; pass its `patch_nums`.")
    if "attn_bias_for_masking" in state_dict:
        expected = torch.where(block_causal_mask(patch_nums), 0.0, float("-inf"))
        if not torch.equal(state_dict["attn_bias_for_masking"].reshape(expected.shape).float(), expected):
            raise ValueError(
                f"The checkpoint's `attn_bias_for_masking` is not VAR's block-causal mask for patch_nums={patch_nums}."
            )
    for key, value in state_dict.items():
        if _ZERO_K_BIAS.match(key) and bool(value.any()):
            raise ValueError(f"`{key}` is not zero; VAR's key bias is a zero buffer, so this is not a VAR checkpoint.")


def convert_var_state_dict(
    var_state_dict: Mapping[str, torch.Tensor], vae_state_dict: Mapping[str, torch.Tensor], config: VARConfig
) -> VARForClassToImage:
    """
    Build `VARForClassToImage(config)` and load the official transformer tensors plus the tokenizer's quantizer
    (`quantize.embedding`, `quantize.quant_resi.*`) strictly. Derived buffers are checked, then dropped.
    """
    _check_derived_buffers(var_state_dict, config)
    state = {
        key: value for key, value in var_state_dict.items()
        if key not in ("lvl_1L", "attn_bias_for_masking") and not _ZERO_K_BIAS.match(key)
    }  # fmt: skip
    for key, value in vae_state_dict.items():
        if key.startswith("quantize.") and key != "quantize.ema_vocab_hit_SV":
            state[key] = value.float()
    with torch.device("meta"):
        model = VARForClassToImage(config)
    load_state_dict_strict(model, state, "VAR transformer (with the VAE's quantizer)", _ARCHITECTURE_HINT)
    return model.eval()


def export_official_state_dict(model: VARForClassToImage) -> dict[str, torch.Tensor]:
    """The official `var_d*.pth` layout of a policy (drops `quantize.*`, re-adds the derived buffers)."""
    patch_nums = list(model.config.patch_nums)
    state = {k: v.detach() for k, v in model.state_dict().items() if not k.startswith("quantize.")}
    state["lvl_1L"] = scale_levels(patch_nums).unsqueeze(0)
    length = len(state["lvl_1L"][0])
    mask = torch.where(block_causal_mask(patch_nums), 0.0, float("-inf"))
    state["attn_bias_for_masking"] = mask.reshape(1, 1, length, length)
    for index in range(model.config.num_hidden_layers):
        state[f"blocks.{index}.attn.zero_k_bias"] = torch.zeros(model.config.hidden_size)
    return state


# ---------------------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------------------


def convert_var_checkpoints(
    output_dir: str | os.PathLike,
    var_ckpt: str | os.PathLike | None,
    vae_ckpt: str | os.PathLike,
    patch_nums: Sequence[int] | None = None,
    num_attention_heads: int | None = None,
    dtype: torch.dtype | None = torch.float32,
    verify: bool = True,
) -> dict[str, str]:
    """
    Convert official files into `output_dir/image_tokenizer` (`VARImageTokenizerProcessor` + `VARVQVAE`) and, with
    `var_ckpt`, `output_dir/policy` (`VARForClassToImage`). Returns the written folders by kind.

    Args:
        output_dir: destination folder.
        var_ckpt: official transformer file (`var_d16.pth` ...), or `None` for the tokenizer only.
        vae_ckpt: official tokenizer file (`vae_ch160v4096z32.pth`); also the source of the policy's quantizer copy.
        patch_nums: scale sides; default: read from the transformer's `lvl_1L`, else the official 256-px pyramid.
        num_attention_heads: heads of a checkpoint without `scale_mul_1H11` (required there: no tensor shape tells
            it, and a wrong value loads; the VAR releases use heads = depth).
        dtype: dtype of the saved policy weights (`None` keeps the checkpoint's); the VQ and `quantize` stay fp32.
        verify: reload both folders strictly and compare every tensor.
    """
    vae_state = load_official_state_dict(vae_ckpt, what="VAR VQ-VAE")
    _require_keys(vae_state, _REQUIRED_VAE_KEYS, vae_ckpt, "VAR VQ-VAE")
    var_state = load_official_state_dict(var_ckpt, what="VAR transformer") if var_ckpt is not None else None
    if var_state is not None:
        _require_keys(var_state, _REQUIRED_VAR_KEYS, var_ckpt, "VAR transformer")
        if "blocks.0.attn.scale_mul_1H11" not in var_state and num_attention_heads is None:
            # Dot-product attention: the head count is in no tensor shape, and a wrong one still loads.
            raise ValueError(
                f"{os.fspath(var_ckpt)!r} uses dot-product attention (no `attn.scale_mul_1H11`), so its number of "
                "attention heads cannot be read from the weights: pass --num_attention_heads (the VAR releases use heads = "
                f"depth, here {_depth(var_state)})."
            )
    if patch_nums is None and var_state is not None and "lvl_1L" in var_state:
        patch_nums = patch_nums_from_levels(var_state["lvl_1L"])
    vq_config = infer_vqvae_config(vae_state, patch_nums=patch_nums)
    vq_model = convert_vqvae_state_dict(vae_state, vq_config)
    written: dict[str, str] = {}
    tokenizer_dir = os.path.join(output_dir, IMAGE_TOKENIZER_SUBFOLDER)
    processor = VARImageTokenizerProcessor.from_vq_model(vq_model)
    processor.save_pretrained(tokenizer_dir)
    written["image_tokenizer"] = tokenizer_dir
    policy = None
    if var_state is not None:
        overrides = {"num_attention_heads": num_attention_heads} if num_attention_heads is not None else {}
        config = infer_var_config(var_state, vq_config=vq_config, **overrides)
        if list(config.patch_nums) != list(vq_config.patch_nums):
            raise ValueError(
                f"The transformer's patch_nums {config.patch_nums} differ from the tokenizer's {vq_config.patch_nums}."
            )
        policy = convert_var_state_dict(var_state, vae_state, config)
        if dtype is not None:
            policy = policy.to(dtype)
            policy.quantize.float()  # the frozen quantizer copy stays fp32, as the tokenizer
        policy_dir = os.path.join(output_dir, POLICY_SUBFOLDER)
        policy.save_pretrained(policy_dir)
        written["policy"] = policy_dir
    if verify:
        reloaded = VARImageTokenizerProcessor.from_pretrained(tokenizer_dir)
        check_reloaded_state_dict(vq_model.state_dict(), reloaded.vq_model.state_dict(), tokenizer_dir)
        if policy is not None:
            reloaded_policy = VARForClassToImage.from_pretrained(written["policy"], dtype=dtype or "auto")
            check_reloaded_state_dict(policy.state_dict(), reloaded_policy.state_dict(), written["policy"])
    return written


__all__ = [
    "IMAGE_TOKENIZER_SUBFOLDER",
    "POLICY_SUBFOLDER",
    "convert_var_checkpoints",
    "convert_var_state_dict",
    "convert_vqvae_state_dict",
    "export_official_state_dict",
    "infer_var_config",
    "infer_vqvae_config",
    "load_official_state_dict",
    "patch_nums_from_levels",
]
