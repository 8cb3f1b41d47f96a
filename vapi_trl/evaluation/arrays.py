"""Layouts of grayscale image arrays for the metrics and the VQ: light (numpy; torch imported on use)."""

from __future__ import annotations

import numpy as np


def to_pixels(images: np.ndarray) -> torch.Tensor:  # noqa: F821
    """uint8 grayscale `[N, 32, 32]` → float32 RGB `[N, 3, 32, 32]` in [-1, 1] (what the VQ preprocessing gives)."""
    import torch

    pixels = torch.from_numpy(np.ascontiguousarray(images)).float().div(127.5).sub(1.0)
    return pixels[:, None].expand(-1, 3, -1, -1).contiguous()


def to_rgb_uint8(images: np.ndarray) -> np.ndarray:
    """uint8 grayscale `[N, H, W]` → uint8 RGB `[N, H, W, 3]` (the layout of the metrics module)."""
    return np.repeat(images[..., None], 3, axis=-1)


__all__ = ["to_pixels", "to_rgb_uint8"]
