"""vapi-trl: VA-π post-training of autoregressive image generators, as a TRL trainer."""

__version__ = "0.1.0"

import importlib
from typing import TYPE_CHECKING, Any


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


def __getattr__(name: str) -> Any:
    if name in _LAZY_ATTRIBUTES:
        value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vapi_trl' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_ATTRIBUTES])


__all__ = [
    "ImageTokenizerProcessor",
    "LlamaGenConfig",
    "LlamaGenForClassToImage",
    "VAPiConfig",
    "VAPiTrainer",
    "__version__",
]
