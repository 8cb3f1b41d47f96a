"""Janus / Janus-Pro (transformers `JanusForConditionalGeneration`) as a VA-π text-to-image policy."""

from .modeling_janus import JanusForImageGeneration, JanusImageGenerationOutput
from .processing_janus import (
    JANUS_BOI_TOKEN,
    JANUS_PAD_TOKEN,
    JANUS_PROMPT_TEMPLATE,
    JanusImageGenerationProcessor,
    format_janus_prompt,
    janus_image_tokenizer_from_model,
    janus_image_tokenizer_from_pretrained,
    janus_special_token_ids,
    tokenize_janus_prompts,
)

__all__ = [
    "JANUS_BOI_TOKEN",
    "JANUS_PAD_TOKEN",
    "JANUS_PROMPT_TEMPLATE",
    "JanusForImageGeneration",
    "JanusImageGenerationOutput",
    "JanusImageGenerationProcessor",
    "format_janus_prompt",
    "janus_image_tokenizer_from_model",
    "janus_image_tokenizer_from_pretrained",
    "janus_special_token_ids",
    "tokenize_janus_prompts",
]
