"""vapi-trl: VA-π post-training of autoregressive image generators, as a TRL trainer."""

__version__ = "0.1.0"

from .config import VAPiConfig
from .models import ImageTokenizerProcessor, LlamaGenConfig, LlamaGenForClassToImage
from .trainer import VAPiTrainer


__all__ = [
    "ImageTokenizerProcessor",
    "LlamaGenConfig",
    "LlamaGenForClassToImage",
    "VAPiConfig",
    "VAPiTrainer",
    "__version__",
]
