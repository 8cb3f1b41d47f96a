"""Evaluation: class-to-image sampling for FID (`sample`) and FID / IS / precision-recall (`metrics`)."""

from .metrics import MetricsResult, build_feature_extractor, compute_metrics
from .sample import SamplingSettings, sample_class_to_image

__all__ = ["MetricsResult", "SamplingSettings", "build_feature_extractor", "compute_metrics", "sample_class_to_image"]
