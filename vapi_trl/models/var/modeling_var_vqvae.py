"""
VAR's multi-scale residual VQ-VAE (FoundationVision/VAR, MIT: `models/vqvae.py`, `models/quant.py`,
`models/basic_vae.py`) as a transformers `PreTrainedModel`.

The module tree and parameter names equal the official ones, so `vae_ch160v4096z32.pth` loads strictly without
renames (`convert_var_to_hf.py`). Inference only: the VQ training losses and codebook-usage updates are not ported.

Tokens of an image are the per-scale id maps of the residual quantizer, coarse to fine, each in raster order, flattened
in scale order to `[B, L]` with `L = sum(pn²)` (680 at 256²). Nearest codes are Euclidean on the raw latent and raw
codebook (VAR's `using_znorm=False`).
"""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from ..modeling_utils import StrictLoadingMixin
from .configuration_var import VARVQVAEConfig


# ---------------------------------------------------------------------------------------------------------------------
# Encoder / decoder (`models/basic_vae.py`)
# ---------------------------------------------------------------------------------------------------------------------


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(num_groups=32, num_channels=channels, eps=1e-6, affine=True)


class VARUpsample2x(nn.Module):
    """Nearest 2× upsampling then a 3×3 conv: `(B, C, h, w)` → `(B, C, 2h, 2w)`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class VARDownsample2x(nn.Module):
    """Right/bottom zero pad then a stride-2 3×3 conv: `(B, C, h, w)` → `(B, C, h/2, w/2)`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, pad=(0, 1, 0, 1), mode="constant", value=0))


class VARResnetBlock(nn.Module):
    """GroupNorm-SiLU-conv ×2 with a 1×1 `nin_shortcut` when the width changes."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.nin_shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.nin_shortcut(x) + h


class VARAttnBlock(nn.Module):
    """Single-head spatial self-attention with a fused 1×1 `qkv` conv and a residual `proj_out`."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.norm = _group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(batch, 3, self.channels, height * width).unbind(1)
        # (B, 1, HW, C) per tensor: one head over all channels, scale C^-1/2 as the official `w_ratio`.
        q, k, v = (t.transpose(1, 2).unsqueeze(1) for t in (q, k, v))
        h = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2)
        return x + self.proj_out(h.reshape(batch, self.channels, height, width))


class VARResolutionLevel(nn.Module):
    """One resolution of the encoder (`block`, `attn`, `downsample`) or decoder (`block`, `attn`, `upsample`)."""

    def __init__(self, block: nn.ModuleList, attn: nn.ModuleList, resample: nn.Module | None, name: str) -> None:
        super().__init__()
        self.block = block
        self.attn = attn
        # The official attribute name (`downsample` / `upsample`) keeps the checkpoint keys.
        self.resample_name = None if resample is None else name
        if resample is not None:
            self.add_module(name, resample)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """The residual blocks, each followed by its attention block when the level has them, then the resampling."""
        for index, block in enumerate(self.block):
            h = block(h)
            if len(self.attn) > 0:
                h = self.attn[index](h)
        return h if self.resample_name is None else getattr(self, self.resample_name)(h)


class VAREncoder(nn.Module):
    """Image `(B, 3, H, W)` in [-1, 1] → latent `(B, z_channels, H/f, W/f)`, `f = 2^(len(ch_mult) - 1)`."""

    def __init__(self, config: VARVQVAEConfig) -> None:
        super().__init__()
        ch, ch_mult, num_levels = config.ch, config.ch_mult, len(config.ch_mult)
        self.num_res_blocks = config.num_res_blocks
        self.conv_in = nn.Conv2d(config.in_channels, ch, kernel_size=3, stride=1, padding=1)
        in_ch_mult = (1, *ch_mult)
        self.down = nn.ModuleList()
        block_in = ch
        for level in range(num_levels):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_in, block_out = ch * in_ch_mult[level], ch * ch_mult[level]
            for _ in range(config.num_res_blocks):
                block.append(VARResnetBlock(block_in, block_out))
                block_in = block_out
                if level == num_levels - 1 and config.using_sa:
                    attn.append(VARAttnBlock(block_in))
            resample = VARDownsample2x(block_in) if level != num_levels - 1 else None
            self.down.append(VARResolutionLevel(block, attn, resample, "downsample"))
        self.mid = nn.Module()
        self.mid.block_1 = VARResnetBlock(block_in, block_in)
        self.mid.attn_1 = VARAttnBlock(block_in) if config.using_mid_sa else nn.Identity()
        self.mid.block_2 = VARResnetBlock(block_in, block_in)
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class VARDecoder(nn.Module):
    """Latent `(B, z_channels, h, w)` → image `(B, 3, h·f, w·f)`, ≈[-1, 1], unclamped."""

    def __init__(self, config: VARVQVAEConfig) -> None:
        super().__init__()
        ch, ch_mult, num_levels = config.ch, config.ch_mult, len(config.ch_mult)
        block_in = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(config.z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = nn.Module()
        self.mid.block_1 = VARResnetBlock(block_in, block_in)
        self.mid.attn_1 = VARAttnBlock(block_in) if config.using_mid_sa else nn.Identity()
        self.mid.block_2 = VARResnetBlock(block_in, block_in)
        levels: list[VARResolutionLevel] = []
        for level in reversed(range(num_levels)):
            block, attn = nn.ModuleList(), nn.ModuleList()
            block_out = ch * ch_mult[level]
            for _ in range(config.num_res_blocks + 1):
                block.append(VARResnetBlock(block_in, block_out))
                block_in = block_out
                if level == num_levels - 1 and config.using_sa:
                    attn.append(VARAttnBlock(block_in))
            resample = VARUpsample2x(block_in) if level != 0 else None
            levels.insert(0, VARResolutionLevel(block, attn, resample, "upsample"))
        self.up = nn.ModuleList(levels)  # index 0 is the highest resolution, as the official `up.insert(0, ...)`
        self.norm_out = _group_norm(block_in)
        self.conv_out = nn.Conv2d(block_in, config.in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(self.conv_in(z))))
        for level in reversed(self.up):
            h = level(h)
        return self.conv_out(F.silu(self.norm_out(h)))


# ---------------------------------------------------------------------------------------------------------------------
# Residual quantizer (`models/quant.py`)
# ---------------------------------------------------------------------------------------------------------------------


class VARPhi(nn.Conv2d):
    """Phi: `(1 - r)·h + r·conv3x3(h)` on `(B, C, h, w)`, computed in fp32 (the quantizer never runs in bf16)."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__(channels, channels, kernel_size=3, stride=1, padding=1)
        self.resi_ratio = abs(ratio)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = h.float()
        conv = F.conv2d(h, self.weight.float(), self.bias.float(), padding=1)
        return h.mul(1 - self.resi_ratio) + conv.mul(self.resi_ratio)


def _phi_ticks(count: int) -> np.ndarray:
    # Official tick positions in [0, 1]: scale k uses the Phi whose tick is nearest to k / (S - 1).
    return (
        np.linspace(1 / 3 / count, 1 - 1 / 3 / count, count)
        if count == 4
        else np.linspace(1 / 2 / count, 1 - 1 / 2 / count, count)
    )


class VARPhiShared(nn.Module):
    """`share_quant_resi=1`: one Phi for every scale (key `qresi`)."""

    def __init__(self, qresi: nn.Module) -> None:
        super().__init__()
        self.qresi = qresi

    def select(self, position: float) -> nn.Module:
        return self.qresi


class VARPhiPartiallyShared(nn.Module):
    """`share_quant_resi=K>1`: K Phi convs (keys `qresi_ls.i`), picked by the nearest tick."""

    def __init__(self, qresi_ls: nn.ModuleList) -> None:
        super().__init__()
        self.qresi_ls = qresi_ls
        self.ticks = _phi_ticks(len(qresi_ls))

    def select(self, position: float) -> nn.Module:
        return self.qresi_ls[int(np.argmin(np.abs(self.ticks - position)))]


class VARPhiNonShared(nn.ModuleList):
    """`share_quant_resi=0`: one Phi per scale (keys `i`), picked by the nearest tick."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__(modules)
        self.ticks = _phi_ticks(len(modules))

    def select(self, position: float) -> nn.Module:
        return self[int(np.argmin(np.abs(self.ticks - position)))]


class VARVectorQuantizer(nn.Module):
    """
    VAR's `VectorQuantizer2` (inference): code `embedding` `(V, C)` and the Phi convs `quant_resi`.

    Args:
        vocab_size, embed_dim: V and C.
        patch_nums: token-map side per scale, coarse to fine.
        quant_resi, share_quant_resi, default_qresi_counts: Phi ratio and sharing (see `VARVQVAEConfig`).
        usage_buffer: register the official `ema_vocab_hit_SV` `(S, V)` buffer (the tokenizer checkpoint has it; the
            policy's frozen copy does not).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        patch_nums: list[int],
        quant_resi: float = 0.5,
        share_quant_resi: int = 4,
        default_qresi_counts: int = 0,
        usage_buffer: bool = True,
    ) -> None:
        super().__init__()
        self.vocab_size, self.embed_dim = vocab_size, embed_dim
        self.patch_nums = [int(pn) for pn in patch_nums]

        def phi() -> nn.Module:
            return VARPhi(embed_dim, quant_resi) if abs(quant_resi) > 1e-6 else nn.Identity()

        if share_quant_resi == 0:
            self.quant_resi = VARPhiNonShared([phi() for _ in range(default_qresi_counts or len(self.patch_nums))])
        elif share_quant_resi == 1:
            self.quant_resi = VARPhiShared(phi())
        else:
            self.quant_resi = VARPhiPartiallyShared(nn.ModuleList([phi() for _ in range(share_quant_resi)]))
        if usage_buffer:
            self.register_buffer("ema_vocab_hit_SV", torch.zeros(len(self.patch_nums), vocab_size))
        self.embedding = nn.Embedding(vocab_size, embed_dim)

    @property
    def num_scales(self) -> int:
        return len(self.patch_nums)

    @property
    def num_image_tokens(self) -> int:
        return sum(pn * pn for pn in self.patch_nums)

    def phi(self, scale_index: int) -> nn.Module:
        """The Phi conv of scale `scale_index` (position `k / (S - 1)` on the ticks)."""
        return self.quant_resi.select(scale_index / (self.num_scales - 1))

    def split_scales(self, ids: torch.Tensor) -> list[torch.Tensor]:
        """Flat ids `(B, l)` → per-scale maps `[(B, pn_k²)]` for the scales fully contained in the first `l` ids."""
        maps, start = [], 0
        for pn in self.patch_nums:
            if start + pn * pn > ids.shape[1]:
                break
            maps.append(ids[:, start : start + pn * pn])
            start += pn * pn
        return maps

    def _embed(self, ids: torch.Tensor, side: int) -> torch.Tensor:
        """Ids `(B, side²)` → code map `(B, C, side, side)` in fp32."""
        codes = F.embedding(ids, self.embedding.weight.float())
        return codes.transpose(1, 2).reshape(ids.shape[0], self.embed_dim, side, side)

    @torch.no_grad()
    def latent_to_ids(self, latent: torch.Tensor) -> torch.LongTensor:
        """
        Residual quantization (`f_to_idxBl_or_fhat`): latent `(B, C, H, W)` with `H = W = patch_nums[-1]` → flat ids
        `(B, L)`, int64 in [0, V), scales coarse to fine, raster order within a scale.
        """
        batch, channels, height, width = latent.shape
        if height != self.patch_nums[-1] or width != self.patch_nums[-1]:
            raise ValueError(
                f"The latent is {height}x{width} but the last scale is {self.patch_nums[-1]}x{self.patch_nums[-1]}; "
                "feed images of the tokenizer's `image_size`."
            )
        rest = latent.float().clone()
        codebook = self.embedding.weight.float()
        codebook_sq = codebook.square().sum(dim=1)
        ids = []
        for index, pn in enumerate(self.patch_nums):
            last = index == self.num_scales - 1
            z = rest if last else F.interpolate(rest, size=(pn, pn), mode="area")
            z = z.permute(0, 2, 3, 1).reshape(-1, channels)
            distances = torch.addmm(z.square().sum(dim=1, keepdim=True) + codebook_sq, z, codebook.T, alpha=-2)
            idx = distances.argmin(dim=1).view(batch, pn * pn)
            h = self._embed(idx, pn)
            if not last:
                h = F.interpolate(h, size=(height, width), mode="bicubic")
            rest.sub_(self.phi(index)(h))
            ids.append(idx)
        return torch.cat(ids, dim=1)

    def ids_to_fhat(self, ids: torch.Tensor) -> torch.Tensor:
        """Flat ids `(B, L)` → residual sum `f_hat` `(B, C, H, W)` in fp32 (`embed_to_fhat(last_one=True)`)."""
        side = self.patch_nums[-1]
        f_hat = None
        for index, (pn, idx) in enumerate(zip(self.patch_nums, self.split_scales(ids))):
            h = self._embed(idx, pn)
            if index < self.num_scales - 1:
                h = F.interpolate(h, size=(side, side), mode="bicubic")
            h = self.phi(index)(h)
            f_hat = h if f_hat is None else f_hat + h
        return f_hat

    def idxBl_to_var_input(self, ids: torch.Tensor) -> torch.Tensor:
        """
        Teacher-forcing input of the transformer from ids: only the first `L − patch_nums[-1]²` ids (scales 0..S−2)
        are read, so the result for scale k depends on scales < k only.

        Args:
            ids (`torch.LongTensor` of shape `(batch_size, l)`, `l >= L − patch_nums[-1]²`): flat ids (e.g. a possibly
                corrupted context of length L − 1).

        Returns:
            `torch.FloatTensor` of shape `(batch_size, L − patch_nums[0]², C)`: for each scale k ≥ 1, the running sum
            `f_hat` of scales < k area-downsampled to `pn_k × pn_k`, in raster order, fp32.
        """
        needed = self.num_image_tokens - self.patch_nums[-1] ** 2
        if ids.ndim != 2 or ids.shape[1] < needed:
            raise ValueError(f"`ids` must have shape (batch_size, >= {needed}), got {tuple(ids.shape)}.")
        batch, side = ids.shape[0], self.patch_nums[-1]
        f_hat = torch.zeros(batch, self.embed_dim, side, side, device=ids.device, dtype=torch.float32)
        inputs = []
        for index, idx in enumerate(self.split_scales(ids[:, :needed])):
            h = F.interpolate(self._embed(idx, self.patch_nums[index]), size=(side, side), mode="bicubic")
            f_hat = f_hat + self.phi(index)(h)
            pn_next = self.patch_nums[index + 1]
            inputs.append(F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").flatten(2).transpose(1, 2))
        return torch.cat(inputs, dim=1)

    def next_autoregressive_input(
        self, scale_index: int, f_hat: torch.Tensor, ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        One step of VAR's sampler (`get_next_autoregressive_input`): add scale `scale_index`'s codes to `f_hat`.

        Args:
            scale_index (`int`): k.
            f_hat (`torch.FloatTensor` of shape `(B, C, H, W)`): running sum of scales < k.
            ids (`torch.LongTensor` of shape `(B, pn_k²)`): ids of scale k.

        Returns:
            `(f_hat, next_input)`: the updated sum, and the next scale's input `(B, pn_{k+1}², C)` (`None` after the
            last scale).
        """
        side, pn = self.patch_nums[-1], self.patch_nums[scale_index]
        h = self._embed(ids, pn)
        if scale_index == self.num_scales - 1:
            return f_hat + self.phi(scale_index)(h), None
        f_hat = f_hat + self.phi(scale_index)(F.interpolate(h, size=(side, side), mode="bicubic"))
        pn_next = self.patch_nums[scale_index + 1]
        return f_hat, F.interpolate(f_hat, size=(pn_next, pn_next), mode="area").flatten(2).transpose(1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# The VQ-VAE model
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class VARVQVAEOutput(ModelOutput):
    """
    Output of `VARVQVAE.forward` (reconstruction).

    Args:
        image_tokens (`torch.LongTensor` of shape `(batch_size, num_image_tokens)`): flat multi-scale ids.
        decoded_pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): ≈[-1, 1].
    """

    image_tokens: torch.LongTensor | None = None
    decoded_pixel_values: torch.FloatTensor | None = None


class VARVQVAE(StrictLoadingMixin, PreTrainedModel):
    """
    VAR's multi-scale residual VQ-VAE: `encode_ids` pixels → flat ids `(B, L)`, `decode_ids` ids → pixels.

    Module tree equals the official `VQVAE` (`encoder`, `decoder`, `quantize`, `quant_conv`, `post_quant_conv`).
    Frozen tokenizer: no training path.
    """

    config: VARVQVAEConfig
    base_model_prefix = "vqvae"
    main_input_name = "pixel_values"
    _conversion_hint = "convert official checkpoints with `vapi-trl convert-var`"
    _no_split_modules = ["VARResnetBlock", "VARAttnBlock"]
    _keep_in_fp32_modules = ["quantize"]

    def __init__(self, config: VARVQVAEConfig) -> None:
        super().__init__(config)
        self.encoder = VAREncoder(config)
        self.decoder = VARDecoder(config)
        self.quantize = VARVectorQuantizer(
            config.vocab_size,
            config.z_channels,
            config.patch_nums,
            quant_resi=config.quant_resi,
            share_quant_resi=config.share_quant_resi,
            default_qresi_counts=config.default_qresi_counts,
            usage_buffer=True,
        )
        ks = config.quant_conv_ks
        self.quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, stride=1, padding=ks // 2)
        self.post_quant_conv = nn.Conv2d(config.z_channels, config.z_channels, ks, stride=1, padding=ks // 2)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VARVectorQuantizer) and hasattr(module, "ema_vocab_hit_SV"):
            init.zeros_(module.ema_vocab_hit_SV)

    @property
    def num_image_tokens(self) -> int:
        """L = `sum(pn²)`."""
        return self.config.num_image_tokens

    @torch.no_grad()
    def encode_ids(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """
        Pixels `(B, 3, image_size, image_size)` in [-1, 1] → flat ids `(B, L)` int64 in [0, V) (`img_to_idxBl`,
        concatenated coarse to fine).
        """
        latent = self.quant_conv(self.encoder(pixel_values))
        return self.quantize.latent_to_ids(latent)

    def decode_ids(self, ids: torch.Tensor) -> torch.FloatTensor:
        """
        Flat ids `(B, L)` in [0, V) → pixels `(B, 3, image_size, image_size)`, ≈[-1, 1], NOT clamped (the official
        `idxBl_to_img(..., last_one=True)` clamps; the reward must see the raw decoder output).
        """
        if ids.ndim != 2 or ids.shape[1] != self.num_image_tokens:
            raise ValueError(f"`ids` must have shape (batch_size, {self.num_image_tokens}), got {tuple(ids.shape)}.")
        f_hat = self.quantize.ids_to_fhat(ids)
        dtype = self.post_quant_conv.weight.dtype
        return self.decoder(self.post_quant_conv(f_hat.to(dtype)))

    def forward(self, pixel_values: torch.Tensor) -> VARVQVAEOutput:
        """Reconstruction: pixels `(B, 3, S, S)` in [-1, 1] → ids and decoded pixels (≈[-1, 1], unclamped)."""
        ids = self.encode_ids(pixel_values)
        return VARVQVAEOutput(image_tokens=ids, decoded_pixel_values=self.decode_ids(ids))


__all__ = [
    "VARVQVAE",
    "VARDecoder",
    "VAREncoder",
    "VARPhi",
    "VARVQVAEOutput",
    "VARVectorQuantizer",
]
