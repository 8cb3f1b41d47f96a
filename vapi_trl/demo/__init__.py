"""The embedded default of `vapi-trl demo`: bundled Fashion-MNIST subset, tiny pretrained VQ + LlamaGen policy, and the
demo run (`run_demo`). Heavy modules load lazily: `from vapi_trl.demo import run_demo` imports the trainer on use."""

from .embedded import (
    CLASS_NAMES,
    load_arrays,
    load_classifiers,
    load_dataset,
    load_image_tokenizer,
    load_policy,
    load_recipe,
)
from .run import DemoSettings, format_report, run_demo

__all__ = [
    "CLASS_NAMES",
    "DemoSettings",
    "format_report",
    "load_arrays",
    "load_classifiers",
    "load_dataset",
    "load_image_tokenizer",
    "load_policy",
    "load_recipe",
    "run_demo",
]
