"""Model families (policies) and image tokenizers, and their Auto-class registrations.

Model types are prefixed (`vapi_llamagen`, `vapi_var`, `vapi_var_vqvae`) so they cannot clash with native transformers
types (style.md §3). Unregistered, `AutoProcessor.from_pretrained(dir)` would silently return the bare
`CLIPImageProcessor` (style.md §4), so the image tokenizers are registered too, and each policy config maps to its
family processor (`LlamaGenConfig` -> `LlamaGenProcessor`, `VARConfig` -> `VARProcessor`), which turns dataset rows into
the policy's condition tensors and holds the image tokenizer.

Not registered, on purpose:
- `JanusForImageGeneration` keeps transformers' native `JanusConfig` ("janus"): load it with
  `JanusForImageGeneration.from_pretrained(path)`; its checkpoints also load with `JanusForConditionalGeneration`.
  Likewise `JanusImageGenerationProcessor`: "janus" maps to transformers' `JanusProcessor`.
- `LlamaGenForTextToImage` shares `LlamaGenConfig` with the C2I class that AutoModel maps it to; `config.task` tells
  them apart. `T5CaptionEncoder` keyed by `T5Config` would replace the processor of every T5 checkpoint.
"""

from transformers import AutoConfig, AutoModel, AutoProcessor, JanusVQVAEConfig

from .image_tokenizer import ImageTokenizerProcessor
from .janus import (
    JanusForImageGeneration,
    JanusImageGenerationProcessor,
    janus_image_tokenizer_from_model,
    janus_image_tokenizer_from_pretrained,
    tokenize_janus_prompts,
)
from .llamagen import (
    LlamaGenConfig,
    LlamaGenForClassToImage,
    LlamaGenForTextToImage,
    LlamaGenProcessor,
    T5CaptionEncoder,
)
from .processing_utils import ImageTokenPolicyProcessor, processor_for_policy
from .var import VARVQVAE, VARConfig, VARForClassToImage, VARImageTokenizerProcessor, VARProcessor, VARVQVAEConfig


# `exist_ok=True`: a registration keyed by a native transformers config ("janus_vqgan") is otherwise skipped
# silently; "janus_vqgan" has no processor of its own, so nothing is displaced.
AutoProcessor.register(JanusVQVAEConfig, ImageTokenizerProcessor, exist_ok=True)
AutoConfig.register(LlamaGenConfig.model_type, LlamaGenConfig, exist_ok=True)
AutoModel.register(LlamaGenConfig, LlamaGenForClassToImage, exist_ok=True)
AutoConfig.register(VARConfig.model_type, VARConfig, exist_ok=True)
AutoConfig.register(VARVQVAEConfig.model_type, VARVQVAEConfig, exist_ok=True)
AutoModel.register(VARConfig, VARForClassToImage, exist_ok=True)
AutoModel.register(VARVQVAEConfig, VARVQVAE, exist_ok=True)
AutoProcessor.register(VARVQVAEConfig, VARImageTokenizerProcessor, exist_ok=True)
AutoProcessor.register(LlamaGenConfig, LlamaGenProcessor, exist_ok=True)
AutoProcessor.register(VARConfig, VARProcessor, exist_ok=True)


__all__ = [
    "ImageTokenPolicyProcessor",
    "ImageTokenizerProcessor",
    "JanusForImageGeneration",
    "JanusImageGenerationProcessor",
    "LlamaGenConfig",
    "LlamaGenForClassToImage",
    "LlamaGenForTextToImage",
    "LlamaGenProcessor",
    "T5CaptionEncoder",
    "VARConfig",
    "VARForClassToImage",
    "VARImageTokenizerProcessor",
    "VARProcessor",
    "VARVQVAE",
    "VARVQVAEConfig",
    "janus_image_tokenizer_from_model",
    "janus_image_tokenizer_from_pretrained",
    "processor_for_policy",
    "tokenize_janus_prompts",
]
