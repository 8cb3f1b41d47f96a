"""LlamaGen (FoundationVision/LlamaGen) ported onto transformers' `LlamaModel` with 2D RoPE."""

from .configuration_llamagen import LLAMAGEN_PRESETS, LlamaGenConfig, find_multiple
from .modeling_llamagen import (
    LlamaGen2DRotaryEmbedding,
    LlamaGenCaptionProjection,
    LlamaGenForClassToImage,
    LlamaGenForTextToImage,
    LlamaGenOutput,
    LlamaGenPreTrainedModel,
    permute_half_to_interleaved,
    permute_interleaved_to_half,
)
from .processing_llamagen import LlamaGenProcessor
from .text_encoder import T5CaptionEncoder, clean_caption, pad_caption_features, right_align_captions


__all__ = [
    "LLAMAGEN_PRESETS",
    "LlamaGen2DRotaryEmbedding",
    "LlamaGenCaptionProjection",
    "LlamaGenConfig",
    "LlamaGenForClassToImage",
    "LlamaGenForTextToImage",
    "LlamaGenOutput",
    "LlamaGenPreTrainedModel",
    "LlamaGenProcessor",
    "T5CaptionEncoder",
    "clean_caption",
    "find_multiple",
    "pad_caption_features",
    "permute_half_to_interleaved",
    "permute_interleaved_to_half",
    "right_align_captions",
]
