"""ADM's center crop, the preprocessing of every official VA-π / LlamaGen training image and FID reference.

Written by hand because no library ships it: transformers' `CLIPImageProcessor` resizes the shortest edge in one
bicubic step (it differs by up to 0.34 on the [-1, 1] scale on a 500×333 image; one 8-bit step is 0.0078), and
torchvision's `Resize` + `CenterCrop` differ likewise.
"""

import numpy as np
import PIL.Image
import torch


def center_crop_arr(pil_image: PIL.Image.Image, image_size: int) -> np.ndarray:
    """
    ADM's `center_crop_arr` (openai/guided-diffusion `image_datasets.py`, copied by LlamaGen `dataset/augmentation.py`):
    halve with BOX while the short side is ≥ 2·`image_size`, resize with BICUBIC so the short side is `image_size`
    (rounded sizes), then crop the center.

    Args:
        pil_image: any size, in the mode it will be cropped in (RGB for the VQ tokenizers).
        image_size: side of the square output, in pixels.

    Returns:
        `np.uint8` array `[image_size, image_size, C]` (or `[image_size, image_size]` for single-band modes).
    """
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=PIL.Image.BOX)
    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=PIL.Image.BICUBIC)
    array = np.array(pil_image)
    crop_y = (array.shape[0] - image_size) // 2
    crop_x = (array.shape[1] - image_size) // 2
    return array[crop_y : crop_y + image_size, crop_x : crop_x + image_size]


def normalize_to_pixel_values(arrays: list[np.ndarray], mean: list[float], std: list[float]) -> torch.FloatTensor:
    """
    uint8 RGB arrays `[S, S, 3]` -> float32 pixel values `[B, 3, S, S]`, as the official `ToTensor()` followed by
    `Normalize(mean, std)`: `(x / 255 − mean) / std` (values in [-1, 1] for mean = std = 0.5).
    """
    pixels = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(255)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return pixels.sub(mean_t).div(std_t)


__all__ = ["center_crop_arr", "normalize_to_pixel_values"]
