"""Backbones and multi-layer feature extraction."""

from oddspot.features.backbone import Backbone, build_backbone
from oddspot.features.extractor import FeatureExtractor

__all__ = ["Backbone", "FeatureExtractor", "build_backbone"]
