"""LlamaGen (FoundationVision/LlamaGen) ported onto transformers' `LlamaModel` with 2D RoPE."""

from .configuration_llamagen import LLAMAGEN_PRESETS, LlamaGenConfig, find_multiple
from .modeling_llamagen import (
    LlamaGen2DRotaryEmbedding,
    LlamaGenForClassToImage,
    LlamaGenOutput,
    LlamaGenPreTrainedModel,
    permute_half_to_interleaved,
    permute_interleaved_to_half,
)


__all__ = [
    "LLAMAGEN_PRESETS",
    "LlamaGen2DRotaryEmbedding",
    "LlamaGenConfig",
    "LlamaGenForClassToImage",
    "LlamaGenOutput",
    "LlamaGenPreTrainedModel",
    "find_multiple",
    "permute_half_to_interleaved",
    "permute_interleaved_to_half",
]
