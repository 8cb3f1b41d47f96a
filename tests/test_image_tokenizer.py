import copy
import json
import os

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoProcessor, JanusVQVAE, JanusVQVAEConfig

from .conftest import assert_close_scaled
from .conftest import tiny_vq_config as shared_tiny_vq_config

from vapi_trl.models.image_tokenizer import VQ_MODEL_SUBFOLDER, ImageTokenizerProcessor, make_image_processor

pytestmark = pytest.mark.numerics


IMAGE_SIZE = 32  # 3 downsamplings (channel_multiplier of length 4) -> 4x4 grid, N = 16
GRID_SIZE = 4
CODEBOOK_SIZE = 256


def tiny_vq_config(num_patches: int = GRID_SIZE, codebook_size: int = CODEBOOK_SIZE) -> JanusVQVAEConfig:
    return shared_tiny_vq_config(codebook_size=codebook_size, num_patches=num_patches)


@pytest.fixture
def raw_vq() -> JanusVQVAE:
    """A random VQ whose codebook rows are far from unit norm (nn.Embedding init std 0.02 -> norms ~0.05)."""
    torch.manual_seed(0)
    return JanusVQVAE(tiny_vq_config())


@pytest.fixture
def processor(raw_vq: JanusVQVAE) -> ImageTokenizerProcessor:
    return ImageTokenizerProcessor.from_vq_model(copy.deepcopy(raw_vq))


@pytest.fixture
def pixel_values() -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.rand(5, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * 2 - 1


def random_images(sizes: list[tuple[int, int]], seed: int = 0) -> list[PIL.Image.Image]:
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for w, h in sizes]


def cosine_reference_ids(vq: JanusVQVAE, raw_codebook: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
    """Official LlamaGen/Janus quantizer: l2-normalise latent and codebook, nearest code by cosine, raster order."""
    with torch.no_grad():
        latents = vq.quant_conv(vq.encoder(pixel_values))  # [B, D, h, w]
        z = F.normalize(latents.permute(0, 2, 3, 1).flatten(1, 2), dim=-1)  # [B, h*w, D]
        codebook = F.normalize(raw_codebook, dim=-1)
        return torch.einsum("bnd,kd->bnk", z, codebook).argmax(-1)


# ------------------------------------------------------------------ encode


def test_encode_shape_dtype_range(processor, pixel_values):
    ids = processor.encode(pixel_values)
    assert ids.shape == (5, GRID_SIZE * GRID_SIZE) == (5, processor.num_image_tokens)
    assert ids.dtype == torch.long
    assert ids.min() >= 0 and ids.max() < CODEBOOK_SIZE
    assert not ids.requires_grad


def test_encode_matches_cosine_reference(raw_vq, processor, pixel_values):
    raw_codebook = raw_vq.quantize.embedding.weight.detach().clone()
    norms = raw_codebook.norm(dim=-1)
    assert not torch.allclose(norms, torch.ones_like(norms), atol=0.1)  # the fix has something to do
    reference = cosine_reference_ids(processor.vq_model, raw_codebook, pixel_values)
    assert torch.equal(processor.encode(pixel_values), reference)
    # Guard that the test discriminates: the stock Euclidean argmin on the raw codebook gives other ids.
    with torch.no_grad():
        euclidean = raw_vq.encode(pixel_values, return_dict=True).image_tokens.view(5, -1)
    assert not torch.equal(euclidean, reference)


def test_codebook_normalised_frozen_fp32(processor):
    vq = processor.vq_model
    norms = vq.quantize.embedding.weight.norm(dim=-1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert not vq.training
    assert all(not p.requires_grad for p in vq.parameters())
    assert all(p.dtype == torch.float32 for p in vq.parameters())


def test_encode_no_grad_with_grad_input(processor, pixel_values):
    ids = processor.encode(pixel_values.requires_grad_())
    assert not ids.requires_grad


# ------------------------------------------------------------------ decode


def test_decode_shape_and_equals_vq_decode(processor, pixel_values):
    ids = processor.encode(pixel_values)
    pixels = processor.decode(ids)
    assert pixels.shape == (5, 3, IMAGE_SIZE, IMAGE_SIZE) and pixels.dtype == torch.float32
    assert not pixels.requires_grad
    with torch.no_grad():
        torch.testing.assert_close(pixels, processor.vq_model.decode(ids))
    torch.testing.assert_close(processor.decode(ids.view(5, GRID_SIZE, GRID_SIZE)), pixels)


def test_decode_not_clamped(processor, pixel_values):
    with torch.no_grad():
        processor.vq_model.decoder.conv_out.bias.add_(5.0)  # push outputs far above 1
    pixels = processor.decode(processor.encode(pixel_values))
    assert pixels.max() > 1.5
    images = processor.batch_decode(processor.encode(pixel_values), output_type="np")
    assert images.max() == 255


def test_chunked_decode_equals_unchunked(raw_vq, pixel_values):
    whole = ImageTokenizerProcessor.from_vq_model(copy.deepcopy(raw_vq), decode_chunk_size=64)
    chunked = ImageTokenizerProcessor.from_vq_model(copy.deepcopy(raw_vq), decode_chunk_size=2)
    ids = whole.encode(pixel_values)
    assert_close_scaled(chunked.decode(ids), whole.decode(ids))


def test_batch_decode_output_types(processor, pixel_values):
    ids = processor.encode(pixel_values)
    pt = processor.batch_decode(ids, output_type="pt")
    torch.testing.assert_close(pt, processor.decode(ids))
    pil = processor.batch_decode(ids)
    assert len(pil) == 5 and all(im.mode == "RGB" and im.size == (IMAGE_SIZE, IMAGE_SIZE) for im in pil)
    array = processor.batch_decode(ids, output_type="np")
    assert array.dtype == np.uint8 and array.shape == (5, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(array[0], np.asarray(pil[0]))
    with pytest.raises(ValueError, match="output_type"):
        processor.batch_decode(ids, output_type="latent")


def test_postprocess_clamp_formula(processor):
    values = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    (image,) = processor.postprocess(values)
    # uint8 = clamp(127.5 x + 128, 0, 255), truncated: -1 -> 0.5 -> 0, 0.5 -> 191.75 -> 191, 1 -> 255.5 -> 255
    assert np.asarray(image)[0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


# ------------------------------------------------------------------ preprocess


def test_call_returns_batch_feature(processor):
    images = random_images([(40, 50), (32, 32), (100, 20)])
    batch = processor(images, return_tensors="pt")
    assert batch["input_ids"].shape == (3, 16) and batch["input_ids"].dtype == torch.long
    assert batch["pixel_values"].shape == (3, 3, IMAGE_SIZE, IMAGE_SIZE)
    assert batch["pixel_values"].min() >= -1 and batch["pixel_values"].max() <= 1
    assert torch.equal(batch["input_ids"], processor.encode(processor.preprocess(images)))


def test_pil_modes_convert_to_rgb(processor):
    gray = PIL.Image.new("L", (32, 32), 128)
    rgb_gray = PIL.Image.new("RGB", (32, 32), (128, 128, 128))
    opaque = PIL.Image.new("RGBA", (32, 32), (10, 200, 30, 255))
    transparent = PIL.Image.new("RGBA", (32, 32), (10, 200, 30, 0))
    palette = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).quantize(16)
    sixteen_bit = PIL.Image.fromarray(np.full((32, 32), 128 * 257, dtype=np.uint16))
    assert sixteen_bit.mode == "I;16"
    pixels = processor.preprocess([gray, rgb_gray, opaque, transparent, palette, sixteen_bit])
    assert pixels.shape == (6, 3, IMAGE_SIZE, IMAGE_SIZE) and pixels.dtype == torch.float32
    torch.testing.assert_close(pixels[0], pixels[1])  # L -> gray replicated on 3 channels
    torch.testing.assert_close(pixels[0, :, 0, 0], torch.full((3,), 128 / 255 * 2 - 1))
    expected = torch.tensor([10, 200, 30]) / 255 * 2 - 1
    torch.testing.assert_close(pixels[2, :, 0, 0], expected)  # opaque RGBA keeps its colour
    torch.testing.assert_close(pixels[3], torch.ones_like(pixels[3]))  # transparent -> white background
    torch.testing.assert_close(pixels[4], processor.preprocess(palette.convert("RGB"))[0])
    torch.testing.assert_close(pixels[5], pixels[0])  # 16-bit scaled to 8 bits, not saturated at 255


def test_resize_and_center_crop(processor):
    small = random_images([(20, 12)])[0]
    assert processor.preprocess(small).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    # 64x32 (w x h): shortest edge already 32, center crop keeps columns 16..47 -> left half black, right half white.
    halves = np.zeros((32, 64, 3), dtype=np.uint8)
    halves[:, 32:] = 255
    pixels = processor.preprocess(PIL.Image.fromarray(halves))[0]
    torch.testing.assert_close(pixels[:, :, :14], torch.full_like(pixels[:, :, :14], -1.0))
    torch.testing.assert_close(pixels[:, :, 18:], torch.full_like(pixels[:, :, 18:], 1.0))
    # Tall 32x96 (w x h): center rows.
    tall = np.zeros((96, 32, 3), dtype=np.uint8)
    tall[32:64] = 255
    pixels = processor.preprocess(PIL.Image.fromarray(tall))[0]
    torch.testing.assert_close(pixels, torch.ones_like(pixels))


def test_numpy_and_uint8_tensor_inputs_match_pil(processor):
    images = random_images([(40, 48), (40, 48)])
    expected = processor.preprocess(images)
    arrays = np.stack([np.asarray(im) for im in images])
    torch.testing.assert_close(processor.preprocess(arrays), expected)  # [B, H, W, C]
    torch.testing.assert_close(processor.preprocess(list(arrays)), expected)
    torch.testing.assert_close(processor.preprocess(torch.from_numpy(arrays).permute(0, 3, 1, 2)), expected)


def test_float_tensor_passthrough(processor, pixel_values):
    assert processor.preprocess(pixel_values) is pixel_values
    assert processor.preprocess(pixel_values[0]).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)


@pytest.mark.parametrize(
    ("images", "error", "match"),
    [
        (torch.zeros(2, 4, IMAGE_SIZE, IMAGE_SIZE), ValueError, r"\[B, 3, 32, 32\]"),
        (torch.zeros(2, 3, 64, 64), ValueError, r"\[B, 3, 32, 32\]"),
        (torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), 200.0), ValueError, r"\[0, 255\]"),
        (torch.full((1, 3, IMAGE_SIZE, IMAGE_SIZE), -1.2), ValueError, r"\[-1, 1\]"),
        (torch.zeros(1, 3, 8, 8, dtype=torch.int32), TypeError, "uint8"),
        (np.zeros((32, 32, 3), dtype=np.float32), TypeError, "uint8"),
        (np.zeros((32, 32, 5), dtype=np.uint8), ValueError, "shape"),
        ("image.png", TypeError, "PIL image"),
        ([], ValueError, "empty"),
        ([PIL.Image.new("RGB", (8, 8)), 3], TypeError, "Image 1"),
    ],
)
def test_bad_images_raise(processor, images, error, match):
    with pytest.raises(error, match=match):
        processor.preprocess(images)


def test_bad_ids_raise(processor):
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        processor.decode(torch.full((1, 16), CODEBOOK_SIZE))
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        processor.decode(torch.full((1, 16), -1))
    with pytest.raises(ValueError, match=r"\[B, 16\]"):
        processor.decode(torch.zeros(1, 15, dtype=torch.long))
    with pytest.raises(TypeError, match="integer"):
        processor.decode(torch.zeros(1, 16))


def test_encode_rejects_wrong_size(processor):
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        processor.encode(torch.zeros(1, 3, 64, 64))


# ------------------------------------------------------------------ save / load


def test_save_load_round_trip(processor, pixel_values, tmp_path):
    processor.save_pretrained(tmp_path)
    assert os.path.isfile(tmp_path / VQ_MODEL_SUBFOLDER / "model.safetensors")
    assert not any(name.endswith((".bin", ".pt")) for name in os.listdir(tmp_path / VQ_MODEL_SUBFOLDER))
    config = json.loads((tmp_path / "processor_config.json").read_text())
    assert config["processor_class"] == "ImageTokenizerProcessor"
    assert (config["codebook_size"], config["grid_size"], config["image_size"]) == (256, 4, 32)
    assert "vq_model" not in config

    ids = processor.encode(pixel_values)
    images = random_images([(40, 50), (33, 31)])
    for loaded in (ImageTokenizerProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is ImageTokenizerProcessor
        assert (loaded.codebook_size, loaded.grid_size, loaded.image_size) == (256, 4, 32)
        assert loaded.decode_chunk_size == processor.decode_chunk_size
        assert torch.equal(loaded.encode(pixel_values), ids)
        assert torch.equal(loaded(images)["input_ids"], processor(images)["input_ids"])
        torch.testing.assert_close(loaded.decode(ids), processor.decode(ids), atol=0, rtol=0)


def test_load_normalises_raw_codebook(raw_vq, processor, pixel_values, tmp_path):
    # A checkpoint written with the raw (non unit-norm) codebook, e.g. converted weights: the fix applies at load.
    processor.save_pretrained(tmp_path)
    raw_vq.save_pretrained(tmp_path / VQ_MODEL_SUBFOLDER)
    loaded = ImageTokenizerProcessor.from_pretrained(tmp_path)
    reference = cosine_reference_ids(loaded.vq_model, raw_vq.quantize.embedding.weight.detach(), pixel_values)
    assert torch.equal(loaded.encode(pixel_values), reference)


def test_load_without_vq(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    light = ImageTokenizerProcessor.from_pretrained(tmp_path, load_vq_model=False)
    assert light.vq_model is None
    assert light.preprocess(random_images([(40, 40)])).shape == (1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with pytest.raises(ValueError, match="no VQ model"):
        light.encode(torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE))
    preprocessing_only = tmp_path / "preprocessing_only"
    light.save_pretrained(preprocessing_only)
    with pytest.raises(OSError, match="load_vq_model=False"):
        ImageTokenizerProcessor.from_pretrained(preprocessing_only)


# ------------------------------------------------------------------ metadata and construction


def test_metadata_and_to(processor):
    assert processor.num_image_tokens == 16
    assert (processor.codebook_size, processor.grid_size, processor.image_size) == (256, 4, 32)
    assert processor.to("cpu") is processor
    assert processor.device == torch.device("cpu")


def test_check_compatible(processor):
    processor.check_compatible(vocab_size=256, num_image_tokens=16)
    with pytest.raises(ValueError, match=r"(?s)16384.*256"):
        processor.check_compatible(vocab_size=16384, num_image_tokens=16)
    with pytest.raises(ValueError, match=r"(?s)256.*16"):
        processor.check_compatible(vocab_size=256, num_image_tokens=256)


def test_from_vq_config_sets_grid():
    torch.manual_seed(0)
    processor = ImageTokenizerProcessor.from_vq_config(tiny_vq_config(num_patches=32), image_size=64)
    assert (processor.grid_size, processor.image_size, processor.num_image_tokens) == (8, 64, 64)
    ids = processor.encode(torch.zeros(2, 3, 64, 64))
    assert processor.decode(ids).shape == (2, 3, 64, 64)
    with pytest.raises(ValueError, match="multiple"):
        ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=36)


def test_inconsistent_metadata_raises(raw_vq):
    with pytest.raises(ValueError, match="codebook_size"):
        ImageTokenizerProcessor(make_image_processor(IMAGE_SIZE), vq_model=raw_vq, codebook_size=512)
    with pytest.raises(ValueError, match="image_size"):
        ImageTokenizerProcessor(make_image_processor(IMAGE_SIZE), vq_model=raw_vq, image_size=64)
    with pytest.raises(ValueError, match="image_size=32"):
        ImageTokenizerProcessor.from_vq_model(raw_vq, image_size=64)
    with pytest.raises(TypeError, match="CLIPImageProcessor"):
        ImageTokenizerProcessor(object(), vq_model=raw_vq)
    with pytest.raises(TypeError, match="JanusVQVAE"):
        ImageTokenizerProcessor(make_image_processor(IMAGE_SIZE), vq_model=torch.nn.Linear(2, 2))
