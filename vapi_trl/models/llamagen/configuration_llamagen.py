"""LlamaGen configuration (FoundationVision/LlamaGen, `autoregressive/models/gpt.py`) in transformers-5 style."""

import math
from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import LlamaConfig, PreTrainedConfig

from ..configuration_utils import check_transformer_sizes


# Fields that must be positive integers (`validate_architecture`).
_POSITIVE_FIELDS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "intermediate_size", "multiple_of", "block_size", "num_classes", "cls_token_num",
)  # fmt: skip


# Official `GPT_models` presets: (n_layer, n_head, dim). FFN width derives from `dim` as in `FeedForward`.
LLAMAGEN_PRESETS: dict[str, dict[str, int]] = {
    "GPT-B": {"num_hidden_layers": 12, "num_attention_heads": 12, "hidden_size": 768},
    "GPT-L": {"num_hidden_layers": 24, "num_attention_heads": 16, "hidden_size": 1024},
    "GPT-XL": {"num_hidden_layers": 36, "num_attention_heads": 20, "hidden_size": 1280},
    "GPT-XXL": {"num_hidden_layers": 48, "num_attention_heads": 24, "hidden_size": 1536},
    "GPT-3B": {"num_hidden_layers": 24, "num_attention_heads": 32, "hidden_size": 3200},
}


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of `k` that is `>= n` (official `find_multiple`)."""
    if n % k == 0:
        return n
    return n + k - (n % k)


@strict
class LlamaGenConfig(PreTrainedConfig):
    r"""
    Configuration of a LlamaGen autoregressive image generator: a Llama decoder over VQ image ids with 2D RoPE,
    conditioned on a class token (C2I) or on caption features (T2I). Defaults reproduce GPT-B C2I at 256² (16×16 ids).

    Official `ModelArgs` → this config: `dim`→`hidden_size`, `n_layer`→`num_hidden_layers`, `n_head`→
    `num_attention_heads`, `n_kv_head`→`num_key_value_heads`, `rope_base`→`rope_theta`, `norm_eps`→`rms_norm_eps`,
    `model_type`→`task` (`model_type` is the transformers registry key and must not be a field).

    Parameters:
        > Parameters that control the backbone

        vocab_size (`int`, *optional*, defaults to `16384`):
            Codebook size of the image tokenizer. Image ids only: the condition uses its own embedding.
        hidden_size (`int`, *optional*, defaults to `768`):
            Width of the decoder.
        num_hidden_layers (`int`, *optional*, defaults to `12`):
            Number of decoder blocks.
        num_attention_heads (`int`, *optional*, defaults to `12`):
            Number of query heads. `hidden_size / num_attention_heads` must be a multiple of 4 (2D RoPE).
        num_key_value_heads (`int`, *optional*):
            Number of key/value heads (GQA). Defaults to `num_attention_heads`.
        intermediate_size (`int`, *optional*):
            SwiGLU hidden width. Derived when `None`, as official LlamaGen:
            `find_multiple(int(ffn_dim_multiplier * int(8 * hidden_size / 3)), multiple_of)`.
        multiple_of (`int`, *optional*, defaults to `256`):
            Rounding of the derived `intermediate_size`.
        ffn_dim_multiplier (`float`, *optional*):
            Optional scale of the derived `intermediate_size`.
        rms_norm_eps (`float`, *optional*, defaults to `1e-5`):
            RMSNorm epsilon.
        rope_theta (`float`, *optional*, defaults to `10000.0`):
            RoPE base of both axes of the 2D rotary embedding.
        initializer_range (`float`, *optional*, defaults to `0.02`):
            Std of the normal init of linear and embedding weights.
        tie_word_embeddings (`bool`, *optional*, defaults to `False`):
            LlamaGen never ties `lm_head` to the image-id embedding; kept for transformers' tying logic.

        > Parameters that control the image grid and the condition

        block_size (`int`, *optional*, defaults to `256`):
            Number of image tokens N per image, in raster order. Must be a perfect square; the grid is `sqrt(N)`.
        task (`str`, *optional*, defaults to `"c2i"`):
            `"c2i"` (class-conditional) or `"t2i"` (caption-conditional).
        num_classes (`int`, *optional*, defaults to `1000`):
            Number of classes (C2I). Class id `num_classes` is the null class used for classifier-free guidance.
        cls_token_num (`int`, *optional*, defaults to `1`):
            Number of condition slots before the image tokens. C2I requires 1 (the official class embedder yields one
            token); official T2I uses 120.
        caption_dim (`int`, *optional*, defaults to `2048`):
            Width of the caption features (flan-T5-XL) for T2I; unused by C2I.
        class_dropout_prob (`float`, *optional*, defaults to `0.1`):
            Probability, in `[0, 1)`, that the forward replaces a row's condition (class label, or caption features)
            by the null condition, drawn once per row, in train mode only (official `LabelEmbedder.token_drop` /
            `CaptionEmbedder.token_drop`). Sampling and `eval()` never drop.

        > Parameters that control dropout (official `ModelArgs` names and defaults; active in train mode only)

        token_dropout_p (`float`, *optional*, defaults to `0.1`):
            Dropout on the input embeddings (condition slots and image ids), official `tok_dropout`.
        attn_dropout_p (`float`, *optional*, defaults to `0.0`):
            Dropout on the attention probabilities.
        resid_dropout_p (`float`, *optional*, defaults to `0.1`):
            Dropout on the attention output projection (official `resid_dropout` after `wo`).
        ffn_dropout_p (`float`, *optional*, defaults to `0.1`):
            Dropout on the SwiGLU output (official `ffn_dropout` after `w2`).
    """

    model_type: ClassVar[str] = "vapi_llamagen"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    # Parameters that control the backbone
    vocab_size: int = 16384
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    multiple_of: int = 256
    ffn_dim_multiplier: float | int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float | int = 10000.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    # Parameters that control the image grid and the condition
    block_size: int = 256
    task: str = "c2i"
    num_classes: int = 1000
    cls_token_num: int = 1
    caption_dim: int = 2048
    class_dropout_prob: float | int = 0.1

    # Parameters that control dropout
    token_dropout_p: float | int = 0.1
    attn_dropout_p: float | int = 0.0
    resid_dropout_p: float | int = 0.1
    ffn_dropout_p: float | int = 0.1

    def __post_init__(self, **kwargs: Any) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        if self.intermediate_size is None:
            hidden_dim = int(2 * 4 * self.hidden_size / 3)
            if self.ffn_dim_multiplier is not None:
                hidden_dim = int(self.ffn_dim_multiplier * hidden_dim)
            self.intermediate_size = find_multiple(hidden_dim, self.multiple_of)
        super().__post_init__(**kwargs)
        # `@strict` runs this again after `__init__` but wraps the error; checking here raises a plain `ValueError`.
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Part of `@strict`-powered validation: checks the shape constraints of the backbone and the grid."""
        check_transformer_sizes(self, _POSITIVE_FIELDS)
        if self.head_dim % 4:
            raise ValueError(
                f"The head dimension `hidden_size / num_attention_heads` ({self.head_dim}) must be a multiple of 4: "
                "2D RoPE rotates half of each head with the row index and half with the column, in pairs."
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"`num_attention_heads` ({self.num_attention_heads}) must be a multiple of `num_key_value_heads` "
                f"({self.num_key_value_heads})."
            )
        if math.isqrt(self.block_size) ** 2 != self.block_size:
            raise ValueError(
                f"`block_size` ({self.block_size}) must be a perfect square (tokens of a square grid in raster "
                f"order), e.g. 256 for 256² or 576 for 384² images with a 16× VQ."
            )
        if self.task not in ("c2i", "t2i"):
            raise ValueError(f"`task` must be 'c2i' or 't2i', got {self.task!r}.")
        if self.task == "c2i" and self.cls_token_num != 1:
            raise ValueError(
                f"`cls_token_num` must be 1 for task='c2i' (the class embedder yields a single token), got "
                f"{self.cls_token_num}."
            )
        for name in ("class_dropout_prob", "token_dropout_p", "attn_dropout_p", "resid_dropout_p", "ffn_dropout_p"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(
                    f"`{name}` must lie in [0, 1), got {getattr(self, name)}; 0 disables it (official value: "
                    f"{0.0 if name == 'attn_dropout_p' else 0.1})."
                )
        if self.rope_theta <= 0:
            raise ValueError(f"`rope_theta` must be positive, got {self.rope_theta}.")

    @property
    def head_dim(self) -> int:
        """Per-head width `hidden_size // num_attention_heads`."""
        return self.hidden_size // self.num_attention_heads

    @property
    def grid_size(self) -> int:
        """Side of the square token grid, `sqrt(block_size)`."""
        return math.isqrt(self.block_size)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "LlamaGenConfig":
        """
        Build the config of an official LlamaGen model size.

        Args:
            name (`str`):
                One of `"GPT-B"`, `"GPT-L"`, `"GPT-XL"`, `"GPT-XXL"`, `"GPT-3B"` (the `"GPT-"` prefix is optional).
            **overrides:
                Any other config field, e.g. `block_size=576` for 384² images.

        Returns:
            `LlamaGenConfig` with the preset's depth, heads and width.
        """
        key = name if name.upper().startswith("GPT-") else f"GPT-{name}"
        key = "GPT-" + key[4:].upper()
        if key not in LLAMAGEN_PRESETS:
            raise ValueError(f"Unknown LlamaGen preset {name!r}; choose one of {sorted(LLAMAGEN_PRESETS)}.")
        return cls(**{**LLAMAGEN_PRESETS[key], **overrides})

    def to_llama_config(self) -> LlamaConfig:
        """
        The `LlamaConfig` of the backbone (`LlamaModel`): bias-free attention and MLP, untied, SwiGLU, one position per
        condition slot and image token. Its `rope_parameters` are unused: the model swaps in the 2D rotary embedding.
        """
        return LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            hidden_act="silu",
            max_position_embeddings=self.block_size + self.cls_token_num,
            initializer_range=self.initializer_range,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            attention_bias=False,
            attention_dropout=float(self.attn_dropout_p),
            mlp_bias=False,
            tie_word_embeddings=False,
            pad_token_id=None,
            bos_token_id=None,
            eos_token_id=None,
            dtype=self.dtype,
        )


__all__ = ["LLAMAGEN_PRESETS", "LlamaGenConfig", "find_multiple"]
