# --- image tokenizer: AutoProcessor registration ---------------------------------------------------------------
# `AutoProcessor.from_pretrained(dir)` resolves the `processor_class` name in `processor_config.json` against the
# registered processors; unregistered, it silently falls back to the bare `CLIPImageProcessor` (style.md §4). The key
# is the config of the model the processor wraps: `exist_ok=True` because registrations keyed by a native transformers
# config are otherwise skipped silently ("janus_vqgan" has no processor of its own, so nothing is displaced).
from transformers import AutoProcessor as _AutoProcessor
from transformers import JanusVQVAEConfig as _JanusVQVAEConfig

from .image_tokenizer import ImageTokenizerProcessor


_AutoProcessor.register(_JanusVQVAEConfig, ImageTokenizerProcessor, exist_ok=True)
# --- end image tokenizer ---------------------------------------------------------------------------------------

# --- llamagen: AutoConfig / AutoModel registration -------------------------------------------------------------
# `model_type` is prefixed ("vapi_llamagen") so it cannot clash with a native transformers type (style.md §3).
from transformers import AutoConfig as _AutoConfig
from transformers import AutoModel as _AutoModel

from .llamagen import LlamaGenConfig, LlamaGenForClassToImage


_AutoConfig.register(LlamaGenConfig.model_type, LlamaGenConfig, exist_ok=True)
_AutoModel.register(LlamaGenConfig, LlamaGenForClassToImage, exist_ok=True)
# --- end llamagen ----------------------------------------------------------------------------------------------

# --- janus: exports only -----------------------------------------------------------------------------------------
# `JanusForImageGeneration` subclasses transformers' `JanusForConditionalGeneration` and keeps its `JanusConfig`
# ("janus" is a native type, so nothing is registered): load it with `JanusForImageGeneration.from_pretrained(path)`;
# saved checkpoints also load with `JanusForConditionalGeneration`.
from .janus import (
    JanusForImageGeneration,
    janus_image_tokenizer_from_model,
    janus_image_tokenizer_from_pretrained,
    tokenize_janus_prompts,
)
# --- end janus ---------------------------------------------------------------------------------------------------

# --- var: AutoConfig / AutoModel / AutoProcessor registration ---------------------------------------------------
# Prefixed model types ("vapi_var", "vapi_var_vqvae"), style.md §3. The processor is keyed by the tokenizer's config,
# so `AutoProcessor.from_pretrained(image_tokenizer_dir)` returns a `VARImageTokenizerProcessor` (style.md §4).
from transformers import AutoConfig as _AutoConfig
from transformers import AutoModel as _AutoModel
from transformers import AutoProcessor as _AutoProcessor

from .var import VARVQVAE, VARConfig, VARForClassToImage, VARImageTokenizerProcessor, VARVQVAEConfig


_AutoConfig.register(VARConfig.model_type, VARConfig, exist_ok=True)
_AutoConfig.register(VARVQVAEConfig.model_type, VARVQVAEConfig, exist_ok=True)
_AutoModel.register(VARConfig, VARForClassToImage, exist_ok=True)
_AutoModel.register(VARVQVAEConfig, VARVQVAE, exist_ok=True)
_AutoProcessor.register(VARVQVAEConfig, VARImageTokenizerProcessor, exist_ok=True)
# --- end var -----------------------------------------------------------------------------------------------------

# --- llamagen t2i: exports only ------------------------------------------------------------------------------------
# `LlamaGenConfig` is already mapped to the C2I class in AutoModel (one class per config type), so the T2I policy is
# loaded with `LlamaGenForTextToImage.from_pretrained(path)`; `config.task` tells them apart. `T5CaptionEncoder` is not
# registered with AutoProcessor: keyed by `T5Config`, it would replace the processor of every T5 checkpoint.
from .llamagen import LlamaGenForTextToImage, T5CaptionEncoder
# --- end llamagen t2i ----------------------------------------------------------------------------------------------
