import os


# Tests never reach the Hub: tiny models are built from configs, weights come from tmp dirs.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage


def tiny_vq_config(codebook_size: int = 64):
    """A ~0.2M-parameter JanusVQVAE config: 3 downsamplings, 32 px images → a 4×4 token grid (N = 16)."""
    from transformers import JanusVQVAEConfig

    return JanusVQVAEConfig(
        embed_dim=8,
        num_embeddings=codebook_size,
        latent_channels=32,
        base_channels=32,
        channel_multiplier=[1, 1, 2, 2],
        num_res_blocks=1,
        projection_dim=32,
        image_token_embed_dim=32,
        num_hidden_layers=1,
        num_patches=4,
    )


def tiny_llamagen_config(codebook_size: int = 64, block_size: int = 16, num_classes: int = 10):
    from vapi_trl.models import LlamaGenConfig

    return LlamaGenConfig(
        vocab_size=codebook_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        block_size=block_size,
        num_classes=num_classes,
    )


@pytest.fixture
def tiny_image_tokenizer():
    from vapi_trl.models import ImageTokenizerProcessor

    torch.manual_seed(0)
    return ImageTokenizerProcessor.from_vq_config(tiny_vq_config(), image_size=32)


@pytest.fixture
def tiny_policy():
    from vapi_trl.models import LlamaGenForClassToImage

    torch.manual_seed(0)
    return LlamaGenForClassToImage(tiny_llamagen_config())


def make_image_dataset(num_images: int = 8, num_classes: int = 10, size: int = 40, seed: int = 0) -> Dataset:
    """Random RGB images of `size`² with integer class labels, as a datasets `Image` column."""
    rng = np.random.default_rng(seed)
    images = [PILImage.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(num_images)]
    labels = [int(i % num_classes) for i in range(num_images)]
    return Dataset.from_dict(
        {"image": images, "class_label": labels}, features=Features({"image": Image(), "class_label": Value("int64")})
    )


@pytest.fixture
def tiny_c2i_dataset():
    return make_image_dataset()
