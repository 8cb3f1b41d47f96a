"""Evaluation: class-to-image sampling for FID (`sample`) and FID / IS / precision-recall (`metrics`).

The names below load on first access (PEP 562, as the package root): the light submodules (`arrays`, read by the demo
and so by `vapi-trl demo --help`) import without torch.
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_attributes


_LAZY_ATTRIBUTES = {
    "MetricsResult": "vapi_trl.evaluation.metrics",
    "build_feature_extractor": "vapi_trl.evaluation.metrics",
    "compute_metrics": "vapi_trl.evaluation.metrics",
    "SamplingSettings": "vapi_trl.evaluation.sample",
    "sample_class_to_image": "vapi_trl.evaluation.sample",
}

if TYPE_CHECKING:
    from .metrics import MetricsResult, build_feature_extractor, compute_metrics
    from .sample import SamplingSettings, sample_class_to_image


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY_ATTRIBUTES, globals())


__all__ = ["MetricsResult", "SamplingSettings", "build_feature_extractor", "compute_metrics", "sample_class_to_image"]
