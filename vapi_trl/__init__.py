"""vapi-trl: VA-π post-training of autoregressive image generators, as a TRL trainer."""

__version__ = "0.1.0"

from typing import TYPE_CHECKING

from ._lazy import lazy_attributes


# Public names -> defining module. Imported on first access (PEP 562), as transformers does, so that `import vapi_trl`
# (and the `vapi-trl` CLI, whose `--help` must start fast) does not load torch, transformers and TRL.
_LAZY_ATTRIBUTES = {
    "ImageTokenizerProcessor": "vapi_trl.models",
    "LlamaGenConfig": "vapi_trl.models",
    "LlamaGenForClassToImage": "vapi_trl.models",
    "VAPiConfig": "vapi_trl.config",
    "VAPiTrainer": "vapi_trl.trainer",
}

if TYPE_CHECKING:
    from .config import VAPiConfig
    from .models import ImageTokenizerProcessor, LlamaGenConfig, LlamaGenForClassToImage
    from .trainer import VAPiTrainer


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES, globals())


__all__ = [
    "ImageTokenizerProcessor",
    "LlamaGenConfig",
    "LlamaGenForClassToImage",
    "VAPiConfig",
    "VAPiTrainer",
    "__version__",
]
