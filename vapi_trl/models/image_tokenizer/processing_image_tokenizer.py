"""Image tokenizer as an HF processor: pixels <-> VQ codebook ids, with the VQ weights saved alongside.

`ImageTokenizerProcessor` wraps a stock `CLIPImageProcessor` (RGB, shortest-edge bicubic resize, center crop, values in
[-1, 1]) and a frozen transformers `JanusVQVAE` (the LlamaGen and Janus tokenizers share its module tree; design notes,
models.md §1-2). `save_pretrained` writes `processor_config.json` (image processor + metadata) and the VQ
model in `vq_model/` (safetensors); `from_pretrained` and `AutoProcessor.from_pretrained` restore both offline.

Codebook fix: the official quantizers pick the cosine-nearest code (latent and codebook l2-normalised), while
`JanusVQVAEVectorQuantizer` takes a Euclidean argmin on the raw latent and raw codebook. With unit-norm codebook rows
argmin ||z - e||^2 = argmin (||z||^2 + 1 - 2 z.e) = argmax z.e, the official ids, without normalising z. The processor
normalises the codebook rows once when it takes a VQ model; decoding (`get_codebook_entry`) already normalises the
looked-up rows, so decoded pixels are unchanged; an already normalised codebook is left as is.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers import CLIPImageProcessor, JanusVQVAE, JanusVQVAEConfig
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import PILImageResampling
from transformers.processing_utils import ProcessorMixin

from .image_transforms import center_crop_arr, normalize_to_pixel_values


VQ_MODEL_SUBFOLDER = "vq_model"

# `JanusVQVAE.from_pretrained` arguments that locate files; forwarded from `ImageTokenizerProcessor.from_pretrained`.
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")

# PIL modes whose `convert("RGB")` saturates at 255 instead of scaling (16-bit PNG, 32-bit integer).
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")

# Tolerance on the [-1, 1] range check: float rounding in resize/normalize may overshoot by a few ulps.
_RANGE_TOLERANCE = 1e-3


def vq_downsample_factor(vq_config: JanusVQVAEConfig) -> int:
    """Downsampling of the `JanusVQVAE` encoder: one stride-2 stage per `channel_multiplier` entry but the last."""
    return 2 ** (len(vq_config.channel_multiplier) - 1)


def make_image_processor(image_size: int) -> CLIPImageProcessor:
    """
    The VQ preprocessing as a stock `CLIPImageProcessor`: RGB, resize the shortest edge to `image_size` (bicubic),
    center crop `image_size`x`image_size`, rescale to [0, 1], normalise with mean = std = 0.5: values in [-1, 1].
    Matches bicubic resize + center crop + `Normalize(0.5, 0.5)` within one 8-bit step (design models.md §1).
    """
    return CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        resample=PILImageResampling.BICUBIC,
        do_resize=True,
        do_center_crop=True,
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
        do_convert_rgb=True,
    )


def checked_image_size(image_processor: Any, image_size: int | None) -> int:
    """The square crop side of `image_processor`, checked against `image_size` when given (pixels per side)."""
    crop_size = getattr(image_processor, "crop_size", None)
    if crop_size is None:
        raise TypeError(
            f"`image_processor` must be a center-cropping image processor such as `CLIPImageProcessor`, got "
            f"{type(image_processor).__name__}; build one with `make_image_processor(image_size)`."
        )
    crop = (
        (crop_size["height"], crop_size["width"])
        if isinstance(crop_size, dict)
        else (crop_size.height, crop_size.width)
    )
    if crop[0] != crop[1]:
        raise ValueError(f"The image processor must center-crop to a square, got crop_size={crop}.")
    if image_size is not None and crop[0] != image_size:
        raise ValueError(
            f"`image_size`={image_size} differs from the image processor's crop size {crop[0]}. Build the image "
            f"processor with `make_image_processor({image_size})`."
        )
    return crop[0]


def sizes_from_vq_model(vq_model: Any, vq_class: type, **sizes: tuple[Any, str]) -> dict[str, Any]:
    """
    The sizes of an image tokenizer: each `name=(value, config_attribute)` is `value` when given, else read from
    `vq_model.config.<config_attribute>`.

    Raises:
        `TypeError` when `vq_model` is not a `vq_class`; `ValueError` when a size is neither given nor readable.
    """
    if vq_model is not None and not isinstance(vq_model, vq_class):
        raise TypeError(f"`vq_model` must be a `{vq_class.__name__}`, got {type(vq_model).__name__}.")
    resolved = {
        name: getattr(vq_model.config, attribute) if value is None and vq_model is not None else value
        for name, (value, attribute) in sizes.items()
    }
    if any(value is None for value in resolved.values()):
        raise ValueError(
            f"{' and '.join(f'`{name}`' for name in sizes)} are required when no `vq_model` is given (they are read "
            "from its config otherwise)."
        )
    return resolved


def check_decode_chunk_size(decode_chunk_size: Any) -> None:
    """Raise a `ValueError` unless `decode_chunk_size` is a positive int."""
    if not isinstance(decode_chunk_size, int) or decode_chunk_size < 1:
        raise ValueError(f"`decode_chunk_size` must be a positive int, got {decode_chunk_size!r}.")


def _rgb_pil_image(image: PIL.Image.Image | np.ndarray | torch.Tensor, index: int) -> PIL.Image.Image:
    """A validated raw image (PIL, uint8 numpy `[H, W(, C)]` or uint8 tensor `[C, H, W]`) as an RGB PIL image: RGBA
    and LA are composited on white (as transformers' `convert_to_rgb`), other modes converted by PIL."""
    if isinstance(image, torch.Tensor):
        image = image.permute(1, 2, 0).numpy()
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image)
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        background = PIL.Image.new("RGBA", image.size, (255, 255, 255, 255))
        return PIL.Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _to_8bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """
    A 16/32-bit integer (`I;16`, `I`) or float (`F`) grayscale PIL image as 8-bit `L` (PIL's own conversion clips
    everything above 255, and maps floats in [0, 1] to black).

    Integer images: values ≤ 255 are taken as 8-bit (an `I` image opened from an 8-bit file), else scaled from the
    16-bit range (65535 -> 255). Float images: values in [0, 1] are scaled by 255, values in [0, 255] taken as is;
    anything else (negative, above 255, NaN) is ambiguous and raises a `ValueError`.
    """
    array = np.asarray(image).astype(np.float64)
    if array.size == 0:
        return PIL.Image.fromarray(array.astype(np.uint8), mode="L")
    low, high = float(array.min()), float(array.max())
    if image.mode == "F":
        if not (np.isfinite(array).all() and 0.0 <= low and high <= 255.0):
            raise ValueError(
                f"A float (mode 'F') image has values in [{low}, {high}]; only [0, 1] or [0, 255] can be read "
                "unambiguously. Convert it to 8-bit first, e.g. PIL.Image.fromarray(uint8_array)."
            )
        array = array * 255.0 if high <= 1.0 else array
    elif high > 255:
        array = np.clip(array, 0, 65535) / 257.0  # 65535 -> 255
    return PIL.Image.fromarray(np.round(np.clip(array, 0, 255)).astype(np.uint8), mode="L")


class ImageTokenizerProcessor(ProcessorMixin):
    r"""
    Image tokenizer: images -> VQ codebook ids [B, N] and back, N = `grid_size`² in raster order.

    Holds a `CLIPImageProcessor` (a sub-processor, saved in `processor_config.json`) and a frozen fp32 `JanusVQVAE`
    (a plain attribute, saved in `vq_model/` by `save_pretrained`). The codebook rows are l2-normalised when the VQ
    model is attached, so ids equal the cosine-nearest codes of the official LlamaGen/Janus tokenizers.

    Args:
        image_processor (`CLIPImageProcessor`):
            Resize/crop/normalise to [-1, 1]; build one with `make_image_processor(image_size)`.
        vq_model (`JanusVQVAE`, *optional*):
            The tokenizer weights. Without it only `preprocess`/`postprocess` work; `encode`/`decode` raise.
        codebook_size (`int`, *optional*):
            Number of codes; defaults to `vq_model.config.num_embeddings`.
        grid_size (`int`, *optional*):
            Tokens per side; defaults to `vq_model.config.num_patches`.
        image_size (`int`, *optional*):
            Pixels per side; defaults to the image processor's crop size.
        decode_chunk_size (`int`, *optional*, defaults to 32):
            Images per VQ decoder call in `decode` (bounds activation memory; the decoder is the costly half).
    """

    # The VQ model class saved in `vq_model/`; subclasses for other tokenizers (e.g. VAR) override it.
    vq_model_class = JanusVQVAE

    def __init__(
        self,
        image_processor: CLIPImageProcessor,
        vq_model: JanusVQVAE | None = None,
        codebook_size: int | None = None,
        grid_size: int | None = None,
        image_size: int | None = None,
        decode_chunk_size: int = 32,
        **kwargs: Any,
    ) -> None:
        image_size = checked_image_size(image_processor, image_size)
        sizes = sizes_from_vq_model(
            vq_model, JanusVQVAE, codebook_size=(codebook_size, "num_embeddings"), grid_size=(grid_size, "num_patches")
        )
        check_decode_chunk_size(decode_chunk_size)
        self.codebook_size = int(sizes["codebook_size"])
        self.grid_size = int(sizes["grid_size"])
        self.image_size = int(image_size)
        self.decode_chunk_size = decode_chunk_size
        self.vq_model: JanusVQVAE | None = None
        super().__init__(image_processor, **kwargs)
        if vq_model is not None:
            self.set_vq_model(vq_model)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_vq_model(
        cls, vq_model: JanusVQVAE, image_size: int | None = None, decode_chunk_size: int = 32
    ) -> ImageTokenizerProcessor:
        """
        Wrap a ready `JanusVQVAE` (e.g. converted LlamaGen weights). `image_size` defaults to
        `num_patches * 2^(len(channel_multiplier) - 1)`; it must match the VQ config's `num_patches`.
        """
        if image_size is None:
            image_size = vq_model.config.num_patches * vq_downsample_factor(vq_model.config)
        return cls(make_image_processor(image_size), vq_model=vq_model, decode_chunk_size=decode_chunk_size)

    @classmethod
    def from_vq_config(
        cls, vq_config: JanusVQVAEConfig, image_size: int | None = None, decode_chunk_size: int = 32
    ) -> ImageTokenizerProcessor:
        """
        Build a processor around a freshly initialised (random) `JanusVQVAE(vq_config)`, for tests and conversion.

        `image_size` (pixels per side) must be a multiple of the encoder downsampling `2^(len(channel_multiplier)-1)`;
        `num_patches` is set to `image_size // downsampling` on a copy of `vq_config` (the decoder reshapes the ids to
        that grid, so the config is per resolution). Defaults to the resolution implied by `vq_config.num_patches`.
        """
        downsample = vq_downsample_factor(vq_config)
        if image_size is None:
            image_size = vq_config.num_patches * downsample
        if image_size % downsample != 0:
            raise ValueError(
                f"`image_size`={image_size} is not a multiple of the VQ downsampling factor {downsample} "
                f"(2^(len(channel_multiplier) - 1)); use e.g. {max(1, image_size // downsample) * downsample}."
            )
        vq_config = copy.deepcopy(vq_config)
        vq_config.num_patches = image_size // downsample
        return cls.from_vq_model(JanusVQVAE(vq_config), image_size=image_size, decode_chunk_size=decode_chunk_size)

    def set_vq_model(self, vq_model: JanusVQVAE) -> None:
        """
        Attach `vq_model` after checking it against the metadata: cast to fp32, eval mode, frozen, codebook rows
        l2-normalised in place (the codebook fix, see the module docstring).
        """
        if not isinstance(vq_model, JanusVQVAE):
            raise TypeError(f"`vq_model` must be a transformers `JanusVQVAE`, got {type(vq_model).__name__}.")
        config = vq_model.config
        downsample = vq_downsample_factor(config)
        if config.num_embeddings != self.codebook_size:
            raise ValueError(
                f"`vq_model` has {config.num_embeddings} codes but `codebook_size`={self.codebook_size}; drop "
                "`codebook_size` to take it from the VQ config."
            )
        if config.num_patches != self.grid_size:
            raise ValueError(
                f"`vq_model.config.num_patches`={config.num_patches} but `grid_size`={self.grid_size}; the VQ "
                "decoder reshapes ids to num_patches x num_patches, so build the VQ config for this resolution."
            )
        if self.grid_size * downsample != self.image_size:
            raise ValueError(
                f"`image_size`={self.image_size} does not give a {self.grid_size}x{self.grid_size} token grid with "
                f"the VQ encoder's downsampling factor {downsample}; use image_size={self.grid_size * downsample}."
            )
        vq_model = vq_model.to(torch.float32)  # quantizer distances in fp32 (style.md §3)
        vq_model.eval()
        vq_model.requires_grad_(False)
        with torch.no_grad():
            weight = vq_model.quantize.embedding.weight
            # Skip an already normalised codebook: renormalising moves rows by an ulp, which would make a
            # save -> load round trip decode differently in the last bits.
            if not torch.allclose(weight.norm(dim=-1), torch.ones_like(weight[:, 0]), rtol=0, atol=1e-6):
                weight.copy_(F.normalize(weight, p=2, dim=-1))
        self.vq_model = vq_model

    # ------------------------------------------------------------------ serialization

    def to_dict(self) -> dict[str, Any]:
        # ProcessorMixin.to_dict deep-copies every instance attribute before filtering, and would keep `vq_model`
        # because it is an `__init__` parameter; hide the weights (saved separately, in `vq_model/`) for the call.
        vq_model = self.__dict__.pop("vq_model", None)
        try:
            return super().to_dict()
        finally:
            self.__dict__["vq_model"] = vq_model

    def save_pretrained(
        self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any
    ) -> list[str]:
        """
        Save `processor_config.json` (image processor + metadata + `processor_class`) and, when a VQ model is attached,
        the VQ model under `save_directory/vq_model/` (`config.json` + `model.safetensors`).
        """
        files = super().save_pretrained(save_directory, push_to_hub=False, **kwargs)
        if self.vq_model is not None:
            vq_dir = os.path.join(save_directory, VQ_MODEL_SUBFOLDER)
            self.vq_model.save_pretrained(vq_dir)
            files.append(vq_dir)
        if push_to_hub:
            # One upload for processor files and VQ weights together (the mixin's upload would miss `vq_model/`).
            from huggingface_hub import HfApi

            api = HfApi(token=kwargs.get("token"))
            repo_id = kwargs.get("repo_id", str(save_directory).rstrip(os.path.sep).split(os.path.sep)[-1])
            repo_id = api.create_repo(repo_id, exist_ok=True, private=kwargs.get("private")).repo_id
            api.upload_folder(
                repo_id=repo_id, folder_path=str(save_directory), commit_message=kwargs.get("commit_message")
            )
        return files

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        load_vq_model: bool = True,
        vq_model: JanusVQVAE | None = None,
        **kwargs: Any,
    ) -> ImageTokenizerProcessor:
        """
        Load a processor saved by `save_pretrained` (local directory or Hub repo) together with its VQ weights from
        `vq_model/`. Pass `vq_model` to use an already loaded model instead, or `load_vq_model=False` for a
        preprocessing-only processor. Hub kwargs (`cache_dir`, `revision`, `local_files_only`, `token`, ...) apply to
        both.
        """
        hub_kwargs = {key: kwargs[key] for key in _HUB_KWARGS if key in kwargs}
        processor = super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        if vq_model is None and load_vq_model:
            subfolder = hub_kwargs.pop("subfolder", "")
            subfolder = f"{subfolder}/{VQ_MODEL_SUBFOLDER}" if subfolder else VQ_MODEL_SUBFOLDER
            try:
                vq_model = cls.vq_model_class.from_pretrained(
                    pretrained_model_name_or_path, subfolder=subfolder, dtype=torch.float32, **hub_kwargs
                )
            except OSError as error:
                raise OSError(
                    f"No VQ weights found in '{pretrained_model_name_or_path}/{subfolder}' (expected `config.json` "
                    f"and `model.safetensors` written by `{cls.__name__}.save_pretrained`). Pass "
                    "`vq_model=...` or `load_vq_model=False` for preprocessing only."
                ) from error
        if vq_model is not None:
            processor.set_vq_model(vq_model)
        return processor

    # ------------------------------------------------------------------ properties and helpers

    @property
    def num_image_tokens(self) -> int:
        """Tokens per image, N = `grid_size`²."""
        return self.grid_size * self.grid_size

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "pixel_values"]

    @property
    def device(self) -> torch.device:
        """Device of the VQ model (CPU when none is attached)."""
        if self.vq_model is None:
            return torch.device("cpu")
        return next(self.vq_model.parameters()).device

    def to(self, device: str | torch.device) -> ImageTokenizerProcessor:
        """Move the VQ model to `device` (dtype stays fp32); returns `self` for chaining."""
        if self.vq_model is not None:
            self.vq_model.to(device)
        return self

    def check_compatible(self, vocab_size: int, num_image_tokens: int) -> None:
        """
        Check that a policy predicting `vocab_size` image codes over `num_image_tokens` positions can be trained on
        this tokenizer's ids. Raises `ValueError` naming both numbers otherwise.
        """
        if vocab_size != self.codebook_size:
            raise ValueError(
                f"The policy's image vocabulary has {vocab_size} entries but the image tokenizer's codebook has "
                f"{self.codebook_size} codes. Use the VQ tokenizer the policy was trained with, or a policy config "
                f"with vocab_size={self.codebook_size}."
            )
        if num_image_tokens != self.num_image_tokens:
            raise ValueError(
                f"The policy generates {num_image_tokens} image tokens but the image tokenizer yields "
                f"{self.num_image_tokens} ({self.grid_size}x{self.grid_size} grid at image_size={self.image_size}). "
                "Use the tokenizer saved for the policy's resolution, or a policy whose block size matches."
            )

    def _require_vq_model(self) -> JanusVQVAE:
        if self.vq_model is None:
            raise ValueError(
                "This ImageTokenizerProcessor has no VQ model (loaded with `load_vq_model=False`?). Attach one with "
                "`processor.set_vq_model(vq_model)` or reload with `ImageTokenizerProcessor.from_pretrained(path)`."
            )
        return self.vq_model

    # ------------------------------------------------------------------ pixels

    def _check_pixel_values(self, pixel_values: torch.Tensor, name: str = "pixel_values") -> None:
        expected = (3, self.image_size, self.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"`{name}` must have shape [B, {expected[0]}, {expected[1]}, {expected[2]}], got "
                f"{list(pixel_values.shape)}. Pass PIL images or uint8 arrays to `preprocess` to resize, crop and "
                "convert them to RGB."
            )
        if not pixel_values.is_floating_point():
            raise TypeError(f"`{name}` must be a floating tensor in [-1, 1], got dtype {pixel_values.dtype}.")
        if pixel_values.numel() > 0:
            low, high = pixel_values.min().item(), pixel_values.max().item()
            if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
                hint = (
                    " This looks like [0, 255] pixels: pass uint8 images (PIL, numpy or a uint8 tensor) to "
                    "`preprocess`, or map them with x / 127.5 - 1."
                    if high > 1.5
                    else " Map [0, 1] pixels with 2 * x - 1."
                )
                raise ValueError(f"`{name}` must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}].{hint}")

    def preprocess(self, images: Any) -> torch.FloatTensor:
        """
        Images -> pixel values `[B, 3, image_size, image_size]`, float32 in [-1, 1]: RGB, ADM's `center_crop_arr`
        (BOX halving while the short side is ≥ 2·image_size, BICUBIC to image_size, center crop; the official
        preprocessing, bit for bit), then `(x / 255 − 0.5) / 0.5`.

        Accepts:
            - a PIL image or a list of them, any mode (`L`, `P`, `RGBA` composited on white, 16-bit `I;16` scaled to
              8 bits) and any size;
            - uint8 numpy arrays `[H, W]`, `[H, W, C]` (C in 1, 3, 4) or a batch `[B, H, W, C]`, or a list of them;
            - a uint8 torch tensor `[3, H, W]` / `[B, 3, H, W]` (raw pixels, processed like numpy);
            - a floating torch tensor `[3, S, S]` / `[B, 3, S, S]` already in [-1, 1] with S = `image_size`: returned
              as is (batched) after a shape and range check.
        """
        if isinstance(images, torch.Tensor):
            if images.is_floating_point():
                pixel_values = images.unsqueeze(0) if images.ndim == 3 else images
                self._check_pixel_values(pixel_values, name="images")
                return pixel_values
            if images.dtype != torch.uint8:
                raise TypeError(
                    f"Integer image tensors must be uint8 [0, 255], got dtype {images.dtype}. Convert with "
                    "`.to(torch.uint8)` or pass floats in [-1, 1]."
                )
            if images.ndim not in (3, 4) or images.shape[-3] not in (1, 3, 4):
                raise ValueError(
                    f"uint8 image tensors must be [C, H, W] or [B, C, H, W] with C in (1, 3, 4), got "
                    f"{list(images.shape)}."
                )
            images = list(images) if images.ndim == 4 else [images]
        elif isinstance(images, np.ndarray):
            images = list(images) if images.ndim == 4 else [images]
        elif isinstance(images, PIL.Image.Image):
            images = [images]
        elif not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
            raise TypeError(
                f"`images` must be a PIL image, a numpy array, a torch tensor or a list of them, got "
                f"{type(images).__name__}."
            )
        if len(images) == 0:
            raise ValueError("`images` is empty.")
        prepared = [self._prepare_image(image, index) for index, image in enumerate(images)]
        # ADM's center crop (issue 12), exactly as the official training images and FID references; the image
        # processor supplies the RGB conversion and the normalisation constants.
        arrays = [
            center_crop_arr(_rgb_pil_image(image, index), self.image_size) for index, image in enumerate(prepared)
        ]
        return normalize_to_pixel_values(
            arrays, list(self.image_processor.image_mean), list(self.image_processor.image_std)
        )

    def _prepare_image(self, image: Any, index: int) -> PIL.Image.Image | np.ndarray | torch.Tensor:
        """Validate one raw image and fix what the image processor gets wrong (high bit depth PIL modes)."""
        if isinstance(image, PIL.Image.Image):
            if 0 in image.size:
                raise ValueError(
                    f"Image {index} is empty ({image.width}×{image.height} pixels); drop it from the data."
                )
            return _to_8bit(image) if image.mode in _HIGH_BIT_DEPTH_MODES else image
        if isinstance(image, np.ndarray):
            if image.dtype != np.uint8:
                raise TypeError(
                    f"numpy images must be uint8 in [0, 255], got dtype {image.dtype} (image {index}). Convert with "
                    "`.astype(np.uint8)`, or pass preprocessed pixels as a float torch tensor in [-1, 1]."
                )
            if image.ndim >= 2 and 0 in image.shape[:2]:
                raise ValueError(f"Image {index} is empty (shape {list(image.shape)}); drop it from the data.")
            if image.ndim == 3 and image.shape[-1] == 1:
                image = image[..., 0]
            if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
                raise ValueError(
                    f"numpy images must be [H, W], [H, W, C] with C in (1, 3, 4), or a batch [B, H, W, C]; got shape "
                    f"{list(image.shape)} (image {index})."
                )
            return image
        if isinstance(image, torch.Tensor):
            if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3, 4):
                raise ValueError(
                    f"Tensors in a list must be uint8 [C, H, W] with C in (1, 3, 4), got dtype {image.dtype} and "
                    f"shape {list(image.shape)} (image {index}); pass preprocessed float pixels as one "
                    "[B, 3, H, W] tensor."
                )
            return image
        raise TypeError(
            f"Image {index} must be a PIL image, a numpy array or a torch tensor, got {type(image).__name__}."
        )

    def postprocess(self, pixel_values: torch.Tensor) -> list[PIL.Image.Image]:
        """
        Pixel values `[B, 3, H, W]` (≈[-1, 1], unclamped) -> list of B RGB PIL images. The only place that clamps:
        uint8 = clamp(127.5 * x + 128, 0, 255), truncated (the LlamaGen sampling script's conversion).
        """
        return [PIL.Image.fromarray(array) for array in self._to_uint8(pixel_values)]

    def _to_uint8(self, pixel_values: torch.Tensor) -> np.ndarray:
        """[B, 3, H, W] in ≈[-1, 1] -> uint8 numpy [B, H, W, 3]."""
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"`pixel_values` must be a torch tensor, got {type(pixel_values).__name__}.")
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(f"`pixel_values` must have shape [B, 3, H, W], got {list(pixel_values.shape)}.")
        pixels = torch.clamp(127.5 * pixel_values.detach().float() + 128.0, 0, 255)
        return pixels.permute(0, 2, 3, 1).to("cpu", dtype=torch.uint8).numpy()

    # ------------------------------------------------------------------ tokens

    @torch.no_grad()
    def encode(self, pixel_values: torch.Tensor) -> torch.LongTensor:
        """
        Pixel values `[B, 3, image_size, image_size]` in [-1, 1] -> ids `[B, N]` (int64, N = `grid_size`², raster
        order, values in [0, `codebook_size`)), on the VQ model's device. Frozen VQ, no gradients.
        """
        vq_model = self._require_vq_model()
        self._check_pixel_values(pixel_values)
        batch_size = pixel_values.shape[0]
        pixel_values = pixel_values.to(device=self.device, dtype=torch.float32)
        # `image_tokens` is flat [B·N] (the quantizer flattens B, h, w in that order).
        image_tokens = vq_model.encode(pixel_values, return_dict=True).image_tokens
        return image_tokens.view(batch_size, self.num_image_tokens)

    @torch.no_grad()
    def decode(self, input_ids: torch.Tensor) -> torch.FloatTensor:
        """
        Ids `[B, N]` or `[B, grid_size, grid_size]` (integer, in [0, `codebook_size`)) -> pixel values
        `[B, 3, image_size, image_size]`, float32, ≈[-1, 1] and NOT clamped, on the VQ model's device. Runs the
        decoder on chunks of `decode_chunk_size` images; no gradients.
        """
        vq_model = self._require_vq_model()
        if not isinstance(input_ids, torch.Tensor):
            input_ids = torch.as_tensor(np.asarray(input_ids))
        if input_ids.is_floating_point() or input_ids.dtype == torch.bool or input_ids.is_complex():
            raise TypeError(f"`input_ids` must be an integer tensor, got dtype {input_ids.dtype}.")
        if input_ids.ndim == 3 and tuple(input_ids.shape[1:]) == (self.grid_size, self.grid_size):
            input_ids = input_ids.flatten(1)
        if input_ids.ndim != 2 or input_ids.shape[1] != self.num_image_tokens:
            raise ValueError(
                f"`input_ids` must have shape [B, {self.num_image_tokens}] or "
                f"[B, {self.grid_size}, {self.grid_size}], got {list(input_ids.shape)}."
            )
        if input_ids.numel() > 0:
            low, high = input_ids.min().item(), input_ids.max().item()
            if low < 0 or high >= self.codebook_size:
                raise ValueError(
                    f"`input_ids` must lie in [0, {self.codebook_size}) (codebook size), got values in "
                    f"[{low}, {high}]. Strip any text-vocabulary offset from image ids before decoding."
                )
        input_ids = input_ids.to(device=self.device, dtype=torch.long)
        chunks = [vq_model.decode(chunk) for chunk in input_ids.split(self.decode_chunk_size)]
        if not chunks:
            return torch.empty(0, 3, self.image_size, self.image_size, device=self.device)
        return torch.cat(chunks)

    def batch_decode(
        self, input_ids: torch.Tensor, output_type: Literal["pil", "pt", "np"] = "pil"
    ) -> list[PIL.Image.Image] | torch.FloatTensor | np.ndarray:
        """
        Ids `[B, N]` or `[B, grid_size, grid_size]` -> images.

        `output_type`:
            - `"pil"`: list of B RGB PIL images (clamped, see `postprocess`);
            - `"pt"`: float32 tensor `[B, 3, image_size, image_size]`, ≈[-1, 1], unclamped (same as `decode`);
            - `"np"`: uint8 numpy array `[B, image_size, image_size, 3]`, the PIL pixels.
        """
        if output_type not in ("pil", "pt", "np"):
            raise ValueError(f"`output_type` must be one of 'pil', 'pt', 'np', got {output_type!r}.")
        pixel_values = self.decode(input_ids)
        if output_type == "pt":
            return pixel_values
        if output_type == "np":
            return self._to_uint8(pixel_values)
        return self.postprocess(pixel_values)

    def __call__(self, images: Any = None, return_tensors: str | None = "pt", **kwargs: Any) -> BatchFeature:
        """
        Images (anything `preprocess` accepts) -> `BatchFeature` with `input_ids` `[B, N]` (int64 codebook ids) and
        `pixel_values` `[B, 3, image_size, image_size]` (float32 in [-1, 1]), both on the VQ model's device.
        """
        if images is None:
            raise ValueError("`images` is required.")
        if kwargs:
            raise TypeError(f"Unexpected keyword arguments {sorted(kwargs)}; the processor takes only `images`.")
        if return_tensors not in ("pt", None):
            raise ValueError(f"Only `return_tensors='pt'` is supported, got {return_tensors!r}.")
        pixel_values = self.preprocess(images).to(self.device)
        input_ids = self.encode(pixel_values)
        return BatchFeature({"input_ids": input_ids, "pixel_values": pixel_values}, tensor_type="pt")


__all__ = [
    "VQ_MODEL_SUBFOLDER",
    "ImageTokenizerProcessor",
    "check_decode_chunk_size",
    "checked_image_size",
    "make_image_processor",
    "sizes_from_vq_model",
    "vq_downsample_factor",
]
