"""
VAR processors: `VARProcessor` (rows -> `class_labels`, with the image tokenizer) and the multi-scale image tokenizer
as an HF processor: pixels <-> flat multi-scale VQ ids, VQ weights saved alongside.

`VARImageTokenizerProcessor` reuses `ImageTokenizerProcessor`'s preprocessing (a stock `CLIPImageProcessor`: RGB,
shortest-edge bicubic resize, center crop, [-1, 1], which is VAR's `normalize_01_into_pm1` input range), postprocessing
and serialization, and swaps the single-scale `JanusVQVAE` for `VARVQVAE`. Ids are per-scale maps flattened coarse to
fine, `[B, L]` with `L = sum(pn²)`; it exposes what `VAPiTrainer` calls on a tokenizer (`preprocess`, `encode`,
`decode`, `check_compatible`, `image_size`, `decode_chunk_size`, `to`, `vq_model`, `num_image_tokens`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import CLIPImageProcessor
from transformers.processing_utils import ProcessorMixin

from ..image_tokenizer.processing_image_tokenizer import (
    ImageTokenizerProcessor,
    check_decode_chunk_size,
    checked_image_size,
    make_image_processor,
    sizes_from_vq_model,
)
from ..processing_utils import ClassLabelProcessor
from .configuration_var import VARVQVAEConfig
from .modeling_var_vqvae import VARVQVAE


class VARImageTokenizerProcessor(ImageTokenizerProcessor):
    r"""
    VAR tokenizer: images -> flat multi-scale ids `[B, L]` (scales coarse to fine, raster order in a scale) and back.

    Holds a `CLIPImageProcessor` (saved in `processor_config.json`) and a frozen fp32 `VARVQVAE` (saved in
    `vq_model/` by `save_pretrained`).

    Args:
        image_processor (`CLIPImageProcessor`):
            Resize/crop/normalise to [-1, 1]; build one with `make_image_processor(image_size)`.
        vq_model (`VARVQVAE`, *optional*):
            The tokenizer weights. Without it only `preprocess`/`postprocess` work.
        codebook_size (`int`, *optional*):
            Number of codes; defaults to `vq_model.config.vocab_size`.
        patch_nums (`list[int]`, *optional*):
            Token-map side per scale; defaults to `vq_model.config.patch_nums`.
        image_size (`int`, *optional*):
            Pixels per side; defaults to the image processor's crop size.
        decode_chunk_size (`int`, *optional*, defaults to 32):
            Images per VQ decoder call in `decode`.
    """

    vq_model_class = VARVQVAE

    def __init__(
        self,
        image_processor: CLIPImageProcessor,
        vq_model: VARVQVAE | None = None,
        codebook_size: int | None = None,
        patch_nums: list[int] | None = None,
        image_size: int | None = None,
        decode_chunk_size: int = 32,
        **kwargs: Any,
    ) -> None:
        image_size = checked_image_size(image_processor, image_size)
        sizes = sizes_from_vq_model(
            vq_model, VARVQVAE, codebook_size=(codebook_size, "vocab_size"), patch_nums=(patch_nums, "patch_nums")
        )
        check_decode_chunk_size(decode_chunk_size)
        self.codebook_size = int(sizes["codebook_size"])
        self.patch_nums = [int(pn) for pn in sizes["patch_nums"]]
        self.grid_size = self.patch_nums[-1]
        self.image_size = int(image_size)
        self.decode_chunk_size = decode_chunk_size
        self.vq_model: VARVQVAE | None = None
        ProcessorMixin.__init__(self, image_processor, **kwargs)
        if vq_model is not None:
            self.set_vq_model(vq_model)

    @classmethod
    def from_vq_model(
        cls, vq_model: VARVQVAE, image_size: int | None = None, decode_chunk_size: int = 32
    ) -> VARImageTokenizerProcessor:
        """Wrap a ready `VARVQVAE`; `image_size` defaults to `vq_model.config.image_size` (official: 256)."""
        image_size = vq_model.config.image_size if image_size is None else image_size
        return cls(make_image_processor(image_size), vq_model=vq_model, decode_chunk_size=decode_chunk_size)

    @classmethod
    def from_vq_config(cls, vq_config: VARVQVAEConfig, decode_chunk_size: int = 32) -> VARImageTokenizerProcessor:
        """A processor around a freshly initialised (random) `VARVQVAE(vq_config)`, for tests and conversion."""
        return cls.from_vq_model(VARVQVAE(vq_config), decode_chunk_size=decode_chunk_size)

    def set_vq_model(self, vq_model: VARVQVAE) -> None:
        """Attach `vq_model` after checking it against the metadata: fp32, eval mode, frozen."""
        if not isinstance(vq_model, VARVQVAE):
            raise TypeError(f"`vq_model` must be a `VARVQVAE`, got {type(vq_model).__name__}.")
        config = vq_model.config
        if config.vocab_size != self.codebook_size:
            raise ValueError(
                f"`vq_model` has {config.vocab_size} codes but `codebook_size`={self.codebook_size}; drop "
                "`codebook_size` to take it from the VQ config."
            )
        if list(config.patch_nums) != self.patch_nums:
            raise ValueError(
                f"`vq_model.config.patch_nums`={config.patch_nums} but `patch_nums`={self.patch_nums}; drop "
                "`patch_nums` to take it from the VQ config."
            )
        if config.image_size != self.image_size:
            raise ValueError(
                f"`image_size`={self.image_size} does not give a {self.grid_size}x{self.grid_size} last scale with "
                f"the VQ encoder's downsampling factor {config.downsample_factor}; use image_size={config.image_size}."
            )
        vq_model = vq_model.to(torch.float32)
        vq_model.eval()
        vq_model.requires_grad_(False)
        self.vq_model = vq_model

    # ------------------------------------------------------------------ sizes

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image L = `sum(pn²)` (680 at 256²)."""
        return sum(pn * pn for pn in self.patch_nums)

    def check_compatible(self, vocab_size: int, num_image_tokens: int) -> None:
        """Raise a `ValueError` naming both numbers if a policy's codebook or token count differs from this one's."""
        if vocab_size != self.codebook_size:
            raise ValueError(
                f"The policy's image vocabulary has {vocab_size} entries but the VAR tokenizer's codebook has "
                f"{self.codebook_size} codes. Use the tokenizer the policy was trained with."
            )
        if num_image_tokens != self.num_image_tokens:
            raise ValueError(
                f"The policy generates {num_image_tokens} image tokens but the VAR tokenizer yields "
                f"{self.num_image_tokens} (patch_nums={self.patch_nums}). Use a policy with the same `patch_nums`."
            )

    # ------------------------------------------------------------------ tokens

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """
        Pixel values `[B, 3, image_size, image_size]` in [-1, 1] -> flat ids `[B, L]` (int64 in [0, codebook_size),
        scales coarse to fine), on the VQ model's device. Euclidean nearest codes; no gradients.
        """
        vq_model = self._require_vq_model()
        self._check_pixel_values(pixel_values)
        return vq_model.encode_ids(pixel_values.to(device=self.device, dtype=torch.float32))

    def _check_ids(self, input_ids: Any) -> torch.LongTensor:
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(np.asarray(input_ids))
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise TypeError(f"`input_ids` must be an integer tensor, got dtype {input_ids.dtype}.")
        if input_ids.ndim != 2 or input_ids.shape[1] != self.num_image_tokens:
            raise ValueError(
                f"`input_ids` must have shape [B, {self.num_image_tokens}] (flat multi-scale ids, patch_nums="
                f"{self.patch_nums}), got {list(input_ids.shape)}."
            )
        if input_ids.numel() > 0:
            low, high = input_ids.min().item(), input_ids.max().item()
            if low < 0 or high >= self.codebook_size:
                raise ValueError(
                    f"`input_ids` must lie in [0, {self.codebook_size}) (codebook size), got [{low}, {high}]."
                )
        return input_ids.to(device=self.device, dtype=torch.long)

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor) -> torch.FloatTensor:
        """
        Flat ids `[B, L]` -> pixel values `[B, 3, image_size, image_size]`, float32, ≈[-1, 1] and NOT clamped, on the
        VQ model's device; decoder runs on chunks of `decode_chunk_size` images, no gradients.
        """
        vq_model = self._require_vq_model()
        input_ids = self._check_ids(input_ids)
        chunks = [vq_model.decode_ids(chunk) for chunk in input_ids.split(self.decode_chunk_size)]
        if not chunks:
            return torch.empty(0, 3, self.image_size, self.image_size, device=self.device)
        return torch.cat(chunks)


class VARProcessor(ClassLabelProcessor):
    r"""
    Rows with a `class_label` column -> the `VARForClassToImage` condition `class_labels` `(B,)` int64, with the
    multi-scale `VARImageTokenizerProcessor` alongside (saved in `image_tokenizer/`).

    Args:
        image_tokenizer ([`VARImageTokenizerProcessor`], *optional*): the frozen multi-scale VQ tokenizer.
        num_classes (`int`, *optional*): real classes of the policy (`config.num_classes`, 1000 officially).
    """

    image_tokenizer_class = VARImageTokenizerProcessor


__all__ = ["VARImageTokenizerProcessor", "VARProcessor"]
