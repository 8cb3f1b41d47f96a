"""VAR (FoundationVision/VAR, next-scale prediction): multi-scale VQ tokenizer and class-to-image policy."""

from .configuration_var import VAR_FID_SAMPLING, VAR_PATCH_NUMS_256, VAR_PRESETS, VARConfig, VARVQVAEConfig
from .modeling_var import (
    VARAdaLNBeforeHead,
    VARAdaLNSelfAttn,
    VARForClassToImage,
    VAROutput,
    VARPreTrainedModel,
    VARSelfAttention,
    block_causal_mask,
    cfg_ramp,
    scale_levels,
)
from .modeling_var_vqvae import VARVQVAE, VARVectorQuantizer, VARVQVAEOutput
from .processing_var import VARImageTokenizerProcessor, VARProcessor

__all__ = [
    "VARVQVAE",
    "VAR_FID_SAMPLING",
    "VAR_PATCH_NUMS_256",
    "VAR_PRESETS",
    "VARAdaLNBeforeHead",
    "VARAdaLNSelfAttn",
    "VARConfig",
    "VARForClassToImage",
    "VARImageTokenizerProcessor",
    "VAROutput",
    "VARPreTrainedModel",
    "VARProcessor",
    "VARSelfAttention",
    "VARVQVAEConfig",
    "VARVQVAEOutput",
    "VARVectorQuantizer",
    "block_causal_mask",
    "cfg_ramp",
    "scale_levels",
]
