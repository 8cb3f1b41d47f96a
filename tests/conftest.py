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


# --- Portable float comparisons -------------------------------------------------------------------------------------
# Two float32 computations of the same quantity that are batched, chunked or blocked differently (a 2B CFG batch, a
# KV-cache step, a chunked decode, another thread count) differ by a few ulps of the LARGEST term they sum, which
# depends on the CPU's kernels. Tolerances are therefore relative to the magnitude of what is compared, never fixed
# absolute values or `torch.equal` (issue 12).


def assert_close_scaled(
    actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4, msg: str | None = None
) -> None:
    """`assert_close` with `atol = rel · max|expected|` and `rtol = rel`."""
    expected = torch.as_tensor(expected)
    scale = expected.detach().abs().max().item() if expected.numel() else 0.0
    torch.testing.assert_close(torch.as_tensor(actual), expected, rtol=rel, atol=rel * max(scale, 1e-12), msg=msg)


def assert_argmax_agrees(scores: torch.Tensor, ids: torch.Tensor, rel: float = 1e-4) -> None:
    """`ids` `[...]` are the argmax of `scores` `[..., K]` up to near-ties: where they differ from `scores.argmax(-1)`,
    the chosen score is within `rel · max|scores|` of the maximum (a tie decided by rounding). At least 95% of the
    positions must agree exactly, so the check cannot pass vacuously."""
    scores = scores.detach().float()
    picked = scores.gather(-1, ids[..., None].long()).squeeze(-1)
    gap = scores.max(-1).values - picked
    tolerance = rel * scores.abs().max().item()
    assert (gap <= tolerance).all(), f"ids differ from the argmax by up to {gap.max().item():.3g} > {tolerance:.3g}"
    assert (scores.argmax(-1) == ids).float().mean().item() >= 0.95, "fewer than 95% of the ids are the exact argmax"


def official_g_fold_loss(trainer, model, inputs: dict) -> torch.Tensor:
    """The official trainer's loss of a VA-π step batch: every (image, sample) row runs its own forward (in train mode:
    its own dropout mask and label-dropout draw) with its own CE term, averaged over the U·G rows."""
    from vapi_trl.objective import ce_prior, clipped_surrogate, filtered_log_probs

    num_images, group, _ = inputs["completion_ids"].shape
    total = 0.0
    for u, g in ((u, g) for u in range(num_images) for g in range(group)):
        logits = model(
            class_labels=inputs["condition.class_labels"][u : u + 1], context_ids=inputs["context_ids"][u : u + 1]
        )
        logits = logits.logits
        new = filtered_log_probs(logits).gather(-1, inputs["completion_ids"][u : u + 1, g, :, None])[..., 0]
        policy_loss, _ = clipped_surrogate(
            new[:, None],
            inputs["old_per_token_logps"][u : u + 1, g : g + 1],
            inputs["advantages"][u : u + 1, g : g + 1],
        )
        total = total + policy_loss + trainer.args.ce_coef * ce_prior(logits, inputs["target_ids"][u : u + 1])
    return total / (num_images * group)


def tiny_vq_config(codebook_size: int = 64, num_patches: int = 4):
    """A ~1M-parameter JanusVQVAE config: 3 downsamplings, 32 px images → a 4×4 token grid (N = 16).

    GroupNorm(32) needs channels that are multiples of 32 (design models.md §1)."""
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
        num_patches=num_patches,
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


# --- Janus (text-to-image) fixtures ------------------------------------------------------------------------------
TINY_JANUS_SPECIAL_TOKENS = [
    "<｜▁pad▁｜>", "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<image_placeholder>", "<|User|>",
    "<|Assistant|>", "<begin_of_image>", "<end_of_image>", "<unk>",
]  # fmt: skip
TINY_JANUS_WORDS = [
    ":", "a", "an", "red", "blue", "green", "cat", "dog", "apple", "on", "the", "table", "photo", "of", "big", "small",
]  # fmt: skip


def tiny_janus_config():
    """The tiny Janus config of the design notes (models.md §1): 64 px images, 8×8 = 64 image tokens, 256 codes."""
    from transformers import JanusConfig, JanusVisionConfig, JanusVQVAEConfig, LlamaConfig

    text_config = LlamaConfig(
        vocab_size=64, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=4, max_position_embeddings=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        initializer_range=0.1,  # larger than 0.02 so that greedy decoding of a random model is not one repeated id
    )  # fmt: skip
    vision_config = JanusVisionConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=64, patch_size=8, projection_dim=64,
        depth=2, num_image_tokens=64, mlp_ratio=2.0,
    )  # fmt: skip
    vq_config = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=256, latent_channels=32, base_channels=32, channel_multiplier=[1, 1, 2, 2],
        num_res_blocks=1, projection_dim=64, image_token_embed_dim=64, num_hidden_layers=2, initializer_range=0.1,
    )  # fmt: skip
    return JanusConfig(text_config=text_config, vision_config=vision_config, vq_config=vq_config, image_token_id=3)


def make_tiny_janus_tokenizer():
    """An offline Janus-like tokenizer: WordLevel over a few words plus the Janus special tokens (ids 0-8)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: index for index, token in enumerate(TINY_JANUS_SPECIAL_TOKENS + TINY_JANUS_WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<｜begin▁of▁sentence｜>",
        eos_token="<｜end▁of▁sentence｜>",
        pad_token="<｜▁pad▁｜>",
        unk_token="<unk>",
        additional_special_tokens=TINY_JANUS_SPECIAL_TOKENS[3:8],
        padding_side="left",
    )


def make_tiny_janus(seed: int = 0):
    from vapi_trl.models import JanusForImageGeneration

    torch.manual_seed(seed)
    model = JanusForImageGeneration(tiny_janus_config())
    model.set_special_token_ids(make_tiny_janus_tokenizer())
    return model


def make_caption_dataset(num_images: int = 4, size: int = 72, seed: int = 0) -> Dataset:
    """Random RGB images of `size`² with short captions from the tiny tokenizer's vocabulary."""
    rng = np.random.default_rng(seed)
    captions = ["a red cat", "the big blue dog on a table", "a photo of an apple", "a small green cat"]
    images = [PILImage.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(num_images)]
    prompts = [captions[i % len(captions)] for i in range(num_images)]
    return Dataset.from_dict(
        {"image": images, "prompt": prompts}, features=Features({"image": Image(), "prompt": Value("string")})
    )


@pytest.fixture
def tiny_janus():
    return make_tiny_janus()


@pytest.fixture
def tiny_janus_tokenizer():
    return make_tiny_janus_tokenizer()


# --- end Janus fixtures ------------------------------------------------------------------------------------------


# --- LlamaGen text-to-image fixtures ------------------------------------------------------------------------------
TINY_T5_WORDS = ["<pad>", "</s>", "<unk>", "a", "an", "red", "blue", "green", "cat", "dog", "apple", "on", "the",
                 "table", "photo", "of", "big", "small", "two", "bench"]  # fmt: skip
TINY_T2I_SLOTS = 8  # caption slots (official: 120)
TINY_T5_DIM = 16  # T5 d_model = caption_dim (official flan-T5-XL: 2048)


def make_tiny_t5_tokenizer():
    """An offline T5-like tokenizer: WordLevel over a few words, `<pad>`=0, `</s>`=1 appended, `<unk>`=2."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({word: i for i, word in enumerate(TINY_T5_WORDS)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def make_tiny_caption_encoder(seed: int = 0, max_length: int = TINY_T2I_SLOTS):
    """`T5CaptionEncoder` over a 1-layer random `T5EncoderModel` (d_model 16) and the tiny tokenizer."""
    from transformers import T5Config, T5EncoderModel

    from vapi_trl.models import T5CaptionEncoder

    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(TINY_T5_WORDS), d_model=TINY_T5_DIM, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    return T5CaptionEncoder(make_tiny_t5_tokenizer(), T5EncoderModel(config), max_length=max_length)


def tiny_llamagen_t2i_config(codebook_size: int = 64, block_size: int = 16):
    from vapi_trl.models import LlamaGenConfig

    return LlamaGenConfig(
        vocab_size=codebook_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        block_size=block_size, task="t2i", cls_token_num=TINY_T2I_SLOTS, caption_dim=TINY_T5_DIM,
    )  # fmt: skip


def make_tiny_llamagen_t2i(seed: int = 0):
    from vapi_trl.models import LlamaGenForTextToImage

    torch.manual_seed(seed)
    return LlamaGenForTextToImage(tiny_llamagen_t2i_config())


# --- end LlamaGen text-to-image fixtures --------------------------------------------------------------------------
