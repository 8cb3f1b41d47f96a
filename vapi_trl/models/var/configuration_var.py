"""VAR configurations (FoundationVision/VAR, `models/vqvae.py`, `models/var.py`) in transformers-5 style."""

from typing import Any, ClassVar

from huggingface_hub.dataclasses import strict
from transformers import PreTrainedConfig

from ..configuration_utils import check_transformer_sizes

# Official 256-px token pyramid: 10 scales, L = 680 tokens.
VAR_PATCH_NUMS_256: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)

# Official `build_vae_var` sizes: width = 64·depth, heads = depth (d36 is the 512-px model).
VAR_PRESETS: dict[str, dict[str, int]] = {
    f"d{depth}": {"num_hidden_layers": depth, "num_attention_heads": depth, "hidden_size": 64 * depth}
    for depth in (16, 20, 24, 30, 36)
}

# VAR's FID protocol (`autoregressive_infer_cfg(cfg=1.5, top_k=900, top_p=0.96)`) in this package's CFG convention:
# VAR's `cfg` is the guidance added on top of 1 at the last scale, so `cfg_scale = 1 + cfg` (see `VARConfig`).
VAR_FID_SAMPLING: dict[str, float] = {"cfg_scale": 2.5, "top_k": 900, "top_p": 0.96}


def _check_patch_nums(patch_nums: list[int]) -> None:
    if len(patch_nums) < 2:
        raise ValueError(
            f"`patch_nums` needs at least 2 scales (the residual quantizer indexes its Phi convs by k/(S-1)), got "
            f"{patch_nums}."
        )
    if any(int(pn) < 1 for pn in patch_nums) or list(patch_nums) != sorted(patch_nums):
        raise ValueError(f"`patch_nums` must be positive and increasing (coarse to fine), got {patch_nums}.")


@strict
class VARVQVAEConfig(PreTrainedConfig):
    r"""
    Configuration of VAR's multi-scale residual VQ-VAE (`vae_ch160v4096z32.pth`). Defaults reproduce the official
    tokenizer at 256² (10 scales, 680 tokens). Field names follow the official `VQVAE.__init__` arguments.

    Parameters:
        > Parameters that control the autoencoder

        vocab_size (`int`, *optional*, defaults to `4096`):
            Codebook size V.
        z_channels (`int`, *optional*, defaults to `32`):
            Latent and code dimension (`Cvae`).
        ch (`int`, *optional*, defaults to `160`):
            Base width of the encoder and decoder.
        ch_mult (`list[int]`, *optional*, defaults to `[1, 1, 2, 2, 4]`):
            Width multipliers per resolution; the downsampling factor is `2^(len(ch_mult) - 1)`.
        num_res_blocks (`int`, *optional*, defaults to `2`):
            Residual blocks per resolution (the decoder uses one more).
        using_sa (`bool`, *optional*, defaults to `True`):
            Self-attention blocks at the lowest resolution.
        using_mid_sa (`bool`, *optional*, defaults to `True`):
            Self-attention in the middle block.
        in_channels (`int`, *optional*, defaults to `3`):
            Image channels.
        quant_conv_ks (`int`, *optional*, defaults to `3`):
            Kernel size of `quant_conv` / `post_quant_conv`.
        initializer_range (`float`, *optional*, defaults to `0.02`):
            Std of the normal init of a freshly built model (converted weights replace it).

        > Parameters that control the residual quantizer

        patch_nums (`list[int]`, *optional*, defaults to `[1, 2, 3, 4, 5, 6, 8, 10, 13, 16]`):
            Side of each scale's token map, coarse to fine; the last equals the latent side
            `image_size / 2^(len(ch_mult) - 1)`. Tokens per image: `sum(pn²)`.
        quant_resi (`float`, *optional*, defaults to `0.5`):
            Phi mixing ratio r: `phi(h) = (1 - r)·h + r·conv(h)`; `0` disables the Phi convs.
        share_quant_resi (`int`, *optional*, defaults to `4`):
            Number of Phi convs shared over the scales: `0` one per scale, `1` one for all, `K > 1` K convs picked by
            the scale's position `k / (S - 1)`.
        default_qresi_counts (`int`, *optional*, defaults to `0`):
            With `share_quant_resi=0`: number of Phi convs (0 = one per scale).
    """

    model_type: ClassVar[str] = "vapi_var_vqvae"

    # Parameters that control the autoencoder
    vocab_size: int = 4096
    z_channels: int = 32
    ch: int = 160
    ch_mult: list[int] | tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    using_sa: bool = True
    using_mid_sa: bool = True
    in_channels: int = 3
    quant_conv_ks: int = 3
    initializer_range: float = 0.02

    # Parameters that control the residual quantizer
    patch_nums: list[int] | tuple[int, ...] = VAR_PATCH_NUMS_256
    quant_resi: float | int = 0.5
    share_quant_resi: int = 4
    default_qresi_counts: int = 0

    def __post_init__(self, **kwargs: Any) -> None:
        self.ch_mult = [int(m) for m in self.ch_mult]
        self.patch_nums = [int(pn) for pn in self.patch_nums]
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Checks the widths, the scale list and the Phi sharing mode."""
        for name in ("vocab_size", "z_channels", "ch", "num_res_blocks", "in_channels", "quant_conv_ks"):
            if getattr(self, name) < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {getattr(self, name)}.")
        if not self.ch_mult:
            raise ValueError("`ch_mult` must list at least one width multiplier.")
        _check_patch_nums(self.patch_nums)
        if self.share_quant_resi < 0 or self.default_qresi_counts < 0:
            raise ValueError(
                f"`share_quant_resi` ({self.share_quant_resi}) and `default_qresi_counts` "
                f"({self.default_qresi_counts}) must be >= 0."
            )

    @property
    def downsample_factor(self) -> int:
        """Encoder downsampling, `2^(len(ch_mult) - 1)`."""
        return 2 ** (len(self.ch_mult) - 1)

    @property
    def image_size(self) -> int:
        """Pixels per side: `patch_nums[-1]` times the downsampling factor (256 for the official tokenizer)."""
        return self.patch_nums[-1] * self.downsample_factor

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image, `sum(pn²)` (680 for the official pyramid)."""
        return sum(pn * pn for pn in self.patch_nums)


@strict
class VARConfig(PreTrainedConfig):
    r"""
    Configuration of a VAR class-to-image transformer (`var_d{16,20,24,30}.pth`): AdaLN blocks conditioned on a class,
    block-causal attention over the scales of a multi-scale residual VQ. Defaults reproduce VAR-d16 at 256².

    The policy also holds a frozen copy of the tokenizer's quantizer (code embedding + Phi convs) to rebuild its
    continuous teacher-forcing input from ids; `vae_embed_dim`, `quant_resi`, `share_quant_resi`,
    `default_qresi_counts` and `patch_nums` must equal the tokenizer's (`VARVQVAEConfig`).

    Classifier-free guidance: VAR mixes `(1 + t_k)·c − t_k·u` at scale k with `t_k = cfg·k/(S−1)`. Here `cfg_scale`
    follows the package convention (`1.0` = no guidance) and is the guidance at the last scale: `t_k = (cfg_scale −
    1)·k/(S−1)`, i.e. VAR's `cfg = cfg_scale − 1` (its FID setting `cfg=1.5` is `cfg_scale=2.5`).

    Parameters:
        > Parameters that control the backbone

        vocab_size (`int`, *optional*, defaults to `4096`):
            Codebook size V of the tokenizer; the head predicts V logits.
        vae_embed_dim (`int`, *optional*, defaults to `32`):
            Code dimension of the tokenizer (`Cvae`), the width of the continuous input.
        hidden_size (`int`, *optional*, defaults to `1024`):
            Width C (`64·depth` for the official models).
        num_hidden_layers (`int`, *optional*, defaults to `16`):
            Depth.
        num_attention_heads (`int`, *optional*, defaults to `16`):
            Heads (`depth` for the official models).
        mlp_ratio (`float`, *optional*, defaults to `4.0`):
            FFN width `round(hidden_size · mlp_ratio)`.
        norm_eps (`float`, *optional*, defaults to `1e-6`):
            LayerNorm epsilon.
        shared_aln (`bool`, *optional*, defaults to `False`):
            One shared AdaLN projection (`shared_ada_lin`) plus a per-block `ada_gss` instead of per-block `ada_lin`.
        attn_l2_norm (`bool`, *optional*, defaults to `True`):
            Cosine attention with a learned per-head scale `scale_mul_1H11` (official builder default); `False` uses
            `q·k · 0.25/sqrt(head_dim)`. The converter sets it from the checkpoint's keys.
        initializer_range (`float`, *optional*, defaults to `0.02`):
            Std of the normal init of a freshly built model.

        > Parameters that control the condition and the scales

        num_classes (`int`, *optional*, defaults to `1000`):
            Number of classes; row `num_classes` of `class_emb` is the null class used for CFG.
        patch_nums (`list[int]`, *optional*, defaults to `[1, 2, 3, 4, 5, 6, 8, 10, 13, 16]`):
            Token-map side per scale, coarse to fine; `sum(pn²)` tokens per image.
        cond_drop_rate (`float`, *optional*, defaults to `0.0`):
            Label dropout of the official training forward (0.1 there, applied even in eval mode). Recorded for
            reference; the forward here never drops labels: set `VAPiConfig.label_dropout` to reproduce it in the
            loss forward.

        > Parameters of the frozen quantizer copy (must match the tokenizer)

        quant_resi (`float`, *optional*, defaults to `0.5`):
            Phi mixing ratio.
        share_quant_resi (`int`, *optional*, defaults to `4`):
            Phi sharing mode, as `VARVQVAEConfig.share_quant_resi`.
        default_qresi_counts (`int`, *optional*, defaults to `0`):
            As `VARVQVAEConfig.default_qresi_counts`.
    """

    model_type: ClassVar[str] = "vapi_var"

    # Parameters that control the backbone
    vocab_size: int = 4096
    vae_embed_dim: int = 32
    hidden_size: int = 1024
    num_hidden_layers: int = 16
    num_attention_heads: int = 16
    mlp_ratio: float | int = 4.0
    norm_eps: float = 1e-6
    shared_aln: bool = False
    attn_l2_norm: bool = True
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False

    # Parameters that control the condition and the scales
    num_classes: int = 1000
    patch_nums: list[int] | tuple[int, ...] = VAR_PATCH_NUMS_256
    cond_drop_rate: float | int = 0.0

    # Parameters of the frozen quantizer copy
    quant_resi: float | int = 0.5
    share_quant_resi: int = 4
    default_qresi_counts: int = 0

    def __post_init__(self, **kwargs: Any) -> None:
        self.patch_nums = [int(pn) for pn in self.patch_nums]
        super().__post_init__(**kwargs)
        self.validate_architecture()

    def validate_architecture(self) -> None:
        """Checks widths, heads and the scale list."""
        positive = ("vocab_size", "vae_embed_dim", "hidden_size", "num_hidden_layers", "num_attention_heads")
        check_transformer_sizes(self, (*positive, "num_classes"))
        _check_patch_nums(self.patch_nums)
        if not 0.0 <= self.cond_drop_rate < 1.0:
            raise ValueError(f"`cond_drop_rate` must lie in [0, 1), got {self.cond_drop_rate}.")

    @property
    def intermediate_size(self) -> int:
        """FFN width `round(hidden_size · mlp_ratio)`."""
        return round(self.hidden_size * self.mlp_ratio)

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image L = `sum(pn²)`."""
        return sum(pn * pn for pn in self.patch_nums)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "VARConfig":
        """
        Config of an official VAR size.

        Args:
            name (`str`): `"d16"`, `"d20"`, `"d24"`, `"d30"` (256²) or `"d36"` (512², pass its `patch_nums`).
            **overrides: any other field, e.g. `attn_l2_norm=False`.
        """
        key = name.lower()
        key = key if key.startswith("d") else f"d{key}"
        if key not in VAR_PRESETS:
            raise ValueError(f"Unknown VAR preset {name!r}; choose one of {sorted(VAR_PRESETS)}.")
        return cls(**{**VAR_PRESETS[key], **overrides})


__all__ = ["VAR_FID_SAMPLING", "VAR_PATCH_NUMS_256", "VAR_PRESETS", "VARConfig", "VARVQVAEConfig"]
