"""Pixel-reconstruction rewards: −(pixel error + λ·LPIPS) of decoded samples against the original image."""

import os
from dataclasses import dataclass
from typing import Any

import lpips
import torch
from torch import nn


# torchvision backbone files that `lpips` loads from the torch hub cache.
LPIPS_BACKBONE_URLS = {
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
}


# The pixel terms of the reward and the LPIPS backbones: each rule is written here once, and `VAPiConfig` applies it
# to its fields.
PIXEL_LOSSES = ("mse", "l1")
LPIPS_NETS = tuple(LPIPS_BACKBONE_URLS)


def check_pixel_loss(pixel_loss: str) -> None:
    """Raise a `ValueError` unless `pixel_loss` is one of `PIXEL_LOSSES`."""
    if pixel_loss not in PIXEL_LOSSES:
        raise ValueError(f"pixel_loss must be 'mse' or 'l1', got {pixel_loss!r}.")


def check_lpips_net(net: str) -> None:
    """Raise a `ValueError` unless `net` is one of `LPIPS_NETS`."""
    if net not in LPIPS_NETS:
        raise ValueError(f"lpips_net must be 'vgg' or 'alex', got {net!r}.")


class LPIPSWeightsNotFoundError(FileNotFoundError):
    """The torchvision backbone weights LPIPS needs are neither cached locally nor downloadable."""


def lpips_backbone_path(net: str) -> str:
    """Where torchvision looks for the ImageNet backbone of LPIPS `net` (`"vgg"` or `"alex"`)."""
    filename = os.path.basename(LPIPS_BACKBONE_URLS[net])
    return os.path.join(torch.hub.get_dir(), "checkpoints", filename)


def _is_offline() -> bool:
    return any(os.environ.get(var, "0").lower() in ("1", "true", "yes") for var in ("HF_HUB_OFFLINE", "VAPI_OFFLINE"))


def ensure_lpips_backbone(net: str) -> str:
    """Return the local path of the LPIPS backbone weights, downloading them once when online.

    Raises:
        LPIPSWeightsNotFoundError: naming the file and where to put it, when it is missing and cannot be fetched.
    """
    check_lpips_net(net)
    path = lpips_backbone_path(net)
    if os.path.isfile(path):
        return path
    url = LPIPS_BACKBONE_URLS[net]
    message = (
        f"LPIPS-{net} needs the torchvision ImageNet backbone file '{os.path.basename(path)}', which is not in the "
        f"local torch cache. Download {url} on a machine with internet access and copy it to '{path}' (the cache "
        "folder is `torch.hub.get_dir()/checkpoints`, set by $TORCH_HOME), or set lpips_weight=0 to train with the "
        "pixel term alone."
    )
    if _is_offline():
        raise LPIPSWeightsNotFoundError(message + " (Offline mode is on, so no download was attempted.)")
    try:
        torch.hub.load_state_dict_from_url(url, progress=False, weights_only=True)
    except Exception as error:  # any network failure means the same thing to the user
        raise LPIPSWeightsNotFoundError(f"{message} (Download failed: {error}.)") from error
    return path


def build_lpips(net: str = "vgg", random_backbone: bool = False) -> lpips.LPIPS:
    """Build a frozen LPIPS v0.1 network in eval mode.

    The linear heads ship with the `lpips` package; the backbone comes from the torch hub cache (see
    [`ensure_lpips_backbone`]). `random_backbone=True` builds a randomly initialised backbone instead, which is only
    meaningful for tests: it is never chosen silently.
    """
    if not random_backbone:
        ensure_lpips_backbone(net)
    model = lpips.LPIPS(pretrained=False, net=net, pnet_rand=random_backbone, verbose=False)
    heads_path = os.path.join(os.path.dirname(lpips.__file__), "weights", "v0.1", f"{net}.pth")
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(heads, strict=False)
    # The head file holds only `lin{k}` weights (`lins.{k}` are aliases of the same modules); everything else missing
    # must be the backbone, loaded above.
    missing_heads = [key for key in missing if key.startswith("lin") and not key.startswith("lins.")]
    if missing_heads or unexpected:
        raise RuntimeError(
            f"LPIPS head file {heads_path} does not match: missing {missing_heads}, extra {unexpected}."
        )
    return model.eval().requires_grad_(False)


def _lpips_features(model: lpips.LPIPS, images: torch.Tensor) -> list[torch.Tensor]:
    # lpips.LPIPS.forward recomputes the reference image's features for every pair; we split it so that the features
    # of each source image are computed once and shared by its G samples.
    outputs = model.net(model.scaling_layer(images))
    return [lpips.normalize_tensor(out) for out in outputs]


def _lpips_distance(model: lpips.LPIPS, feats0: list[torch.Tensor], feats1: list[torch.Tensor]) -> torch.Tensor:
    total = 0.0
    for head, f0, f1 in zip(model.lins, feats0, feats1, strict=True):
        total = total + lpips.spatial_average(head((f0 - f1) ** 2), keepdim=False)
    return total.flatten()


@dataclass
class RewardTerms:
    """Per-sample reward terms, each `[U, G]` fp32. `total = −(pixel_weight·pixel + lpips_weight·lpips)`."""

    total: torch.Tensor
    pixel: torch.Tensor
    lpips: torch.Tensor | None


class PixelReconstructionReward(nn.Module):
    """VA-π's intrinsic reward: `−(w_pix · pixel_error + w_lp · LPIPS)` against the original image.

    Images are compared on the [-1, 1] scale without clamping (the MSE then lies in [0, 4]). The LPIPS features of each
    source image are computed once and shared by its G samples: 1 + G backbone passes per image instead of 2G.

    Args:
        pixel_loss: `"mse"` or `"l1"`, a mean over channels and pixels.
        pixel_weight: weight of the pixel term.
        lpips_weight: weight of LPIPS; 0 builds no network.
        lpips_model: a ready LPIPS network (e.g. from [`build_lpips`]); required when `lpips_weight > 0`.
        chunk_size: samples scored by LPIPS at once.
    """

    def __init__(
        self,
        pixel_loss: str = "mse",
        pixel_weight: float = 1.0,
        lpips_weight: float = 1.0,
        lpips_model: lpips.LPIPS | None = None,
        chunk_size: int = 16,
    ):
        super().__init__()
        check_pixel_loss(pixel_loss)
        if lpips_weight > 0 and lpips_model is None:
            raise ValueError("lpips_weight > 0 needs an `lpips_model` (see `build_lpips`), or set lpips_weight=0.")
        self.pixel_loss = pixel_loss
        self.pixel_weight = pixel_weight
        self.lpips_weight = lpips_weight
        self.lpips_model = lpips_model if lpips_weight > 0 else None
        self.chunk_size = chunk_size

    @torch.no_grad()
    def forward(self, samples: torch.Tensor, targets: torch.Tensor) -> RewardTerms:
        """Score decoded samples.

        Args:
            samples: `[U, G, 3, H, W]` decoded images, roughly in [-1, 1] (not clamped).
            targets: `[U, 3, H, W]` original images in [-1, 1].

        Returns:
            [`RewardTerms`] with `[U, G]` fp32 tensors.
        """
        if samples.dim() != 5 or targets.dim() != 4 or samples.shape[0] != targets.shape[0]:
            raise ValueError(
                f"expected samples [U, G, 3, H, W] and targets [U, 3, H, W], got {tuple(samples.shape)} and "
                f"{tuple(targets.shape)}."
            )
        if samples.shape[2:] != targets.shape[1:]:
            raise ValueError(
                f"decoded samples have size {tuple(samples.shape[2:])} but targets {tuple(targets.shape[1:])}: the "
                "processor's image size must match the VQ decoder's output size."
            )
        samples, targets = samples.float(), targets.float()
        error = samples - targets[:, None]
        pixel = error.pow(2) if self.pixel_loss == "mse" else error.abs()
        pixel = pixel.mean(dim=(2, 3, 4))
        total = -self.pixel_weight * pixel
        lpips_value = None
        if self.lpips_model is not None:
            lpips_value = self._lpips(samples, targets)
            total = total - self.lpips_weight * lpips_value
        return RewardTerms(total=total, pixel=pixel, lpips=lpips_value)

    def _lpips(self, samples: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        num_images, num_samples = samples.shape[:2]
        reference = _lpips_features(self.lpips_model, targets)
        flat = samples.flatten(0, 1)
        owner = torch.arange(num_images, device=samples.device).repeat_interleave(num_samples)
        distances = []
        for start in range(0, flat.shape[0], self.chunk_size):
            rows = slice(start, start + self.chunk_size)
            feats = _lpips_features(self.lpips_model, flat[rows])
            ref = [f[owner[rows]] for f in reference]
            distances.append(_lpips_distance(self.lpips_model, feats, ref))
        return torch.cat(distances).view(num_images, num_samples)


class PixelReconstructionRewardFunc:
    """[`PixelReconstructionReward`] as a TRL reward function: `f(prompts, completions, target_pixels, **kw)`.

    `completions` are decoded images `[3, H, W]` and `target_pixels` the original images `[3, H, W]`, both in [-1, 1],
    one per sample; returns one float per sample. `VAPiTrainer` registers it as its first reward (so GRPO's reward
    names and `reward_weights` include it) but scores whole groups in batch instead, sharing each image's LPIPS
    features across its G samples; this per-sample form serves other TRL trainers and tests.
    """

    __name__ = "pixel_reconstruction"

    def __init__(self, reward: PixelReconstructionReward):
        self.reward = reward

    def __call__(self, prompts: list, completions: list[torch.Tensor], target_pixels: list, **kwargs) -> list[float]:
        samples = torch.stack([torch.as_tensor(image) for image in completions])[:, None]
        targets = torch.stack([torch.as_tensor(image) for image in target_pixels]).to(samples)
        return self.reward(samples, targets).total[:, 0].tolist()


def extra_reward_value(value: Any, name: str) -> float:
    """One value returned by the extra reward function `name` as a float (`None`: NaN, "does not apply", masked by
    the caller)."""
    if value is None:
        return float("nan")
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.item())
    if not isinstance(value, (int, float)) and not hasattr(value, "__float__"):
        raise TypeError(
            f"reward function {name!r} returned {value!r}: each value must be a number, or None for a sample the "
            f"function does not apply to; got {type(value).__name__}."
        )
    return float(value)


__all__ = [
    "LPIPS_NETS",
    "LPIPSWeightsNotFoundError",
    "PIXEL_LOSSES",
    "PixelReconstructionReward",
    "PixelReconstructionRewardFunc",
    "RewardTerms",
    "build_lpips",
    "check_lpips_net",
    "check_pixel_loss",
    "ensure_lpips_backbone",
    "extra_reward_value",
    "lpips_backbone_path",
]
