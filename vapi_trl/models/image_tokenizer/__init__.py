"""Image tokenizer processor: images <-> VQ codebook ids (`JanusVQVAE` with the l2-normalised codebook)."""

from .processing_image_tokenizer import (
    VQ_MODEL_SUBFOLDER,
    ImageTokenizerProcessor,
    make_image_processor,
    vq_downsample_factor,
)


__all__ = ["VQ_MODEL_SUBFOLDER", "ImageTokenizerProcessor", "make_image_processor", "vq_downsample_factor"]
