"""Every VA-π target and x* goes through ADM's `center_crop_arr`, bit for bit (issue 12)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms

from vapi_trl.models import ImageTokenizerProcessor
from vapi_trl.models.image_tokenizer.image_transforms import center_crop_arr

from .conftest import tiny_vq_config

pytestmark = pytest.mark.numerics


def official_center_crop_arr(pil_image, image_size):
    """Verbatim from openai/guided-diffusion `image_datasets.py` (as in LlamaGen `dataset/augmentation.py`)."""
    while min(*pil_image.size) >= 2 * image_size:
        pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)

    scale = image_size / min(*pil_image.size)
    pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)

    arr = np.array(pil_image)
    crop_y = (arr.shape[0] - image_size) // 2
    crop_x = (arr.shape[1] - image_size) // 2
    return Image.fromarray(arr[crop_y : crop_y + image_size, crop_x : crop_x + image_size])


def official_transform(image_size):
    """The official training transform: ADM crop, `ToTensor`, `Normalize(0.5, 0.5)`."""
    return transforms.Compose(
        [
            transforms.Lambda(lambda pil_image: official_center_crop_arr(pil_image, image_size)),
            transforms.ToTensor(),
            transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5], inplace=True),
        ]
    )


def random_photo(width, height, seed):
    """A smooth random RGB image plus noise (resampling differences show on both edges and texture)."""
    rng = np.random.default_rng(seed)
    low = rng.integers(0, 256, (max(height // 16, 2), max(width // 16, 2), 3), dtype=np.uint8)
    smooth = np.array(Image.fromarray(low).resize((width, height), Image.BILINEAR)).astype(np.int16)
    noisy = np.clip(smooth + rng.integers(-40, 41, smooth.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(noisy)


SIZES = [
    (500, 333), (333, 500), (1024, 768), (768, 1024), (256, 256), (257, 1000), (2000, 1500), (800, 799),
    (383, 384), (64, 48), (31, 47), (96, 1000), (1000, 96), (513, 512), (640, 480), (4000, 3000),
]  # fmt: skip


@pytest.mark.parametrize("image_size", [32, 64, 256])
def test_center_crop_equals_the_official_function_to_the_bit(image_size):
    for index, (width, height) in enumerate(SIZES):
        image = random_photo(width, height, seed=index)
        expected = np.array(official_center_crop_arr(image, image_size))
        ours = center_crop_arr(image, image_size)
        assert ours.shape == (image_size, image_size, 3)
        assert np.array_equal(ours, expected), (width, height, image_size)


def test_processor_preprocess_equals_the_official_transform_to_the_bit():
    torch.manual_seed(0)
    processor = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)
    images = [random_photo(width, height, seed=index) for index, (width, height) in enumerate(SIZES)]
    expected = torch.stack([official_transform(32)(image) for image in images])
    ours = processor.preprocess(images)
    assert ours.dtype == torch.float32 and ours.shape == (len(SIZES), 3, 32, 32)
    # Elementwise ops on the same uint8 values: equal to the bit, not merely close.
    assert torch.equal(ours, expected)
    # The one-step bicubic shortest-edge resize the processor used before differs by many 8-bit steps.
    one_step = processor.image_processor(images[:1], return_tensors="pt")["pixel_values"]
    assert (one_step - expected[:1]).abs().max() > 2 / 255


def test_modes_and_inputs_share_the_crop():
    torch.manual_seed(0)
    processor = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)
    image = random_photo(100, 60, seed=3)
    reference = processor.preprocess(image)
    array = np.array(image)
    torch.testing.assert_close(processor.preprocess(array), reference, rtol=0, atol=0)
    torch.testing.assert_close(
        processor.preprocess(torch.from_numpy(array).permute(2, 0, 1)), reference, rtol=0, atol=0
    )
    rgba = image.convert("RGBA")
    torch.testing.assert_close(processor.preprocess(rgba), reference, rtol=0, atol=0)  # opaque alpha: unchanged
    gray = processor.preprocess(image.convert("L"))
    assert torch.equal(gray[:, 0], gray[:, 1]) and torch.equal(gray[:, 1], gray[:, 2])
