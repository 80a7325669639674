"""Backbones and multi-layer feature extraction.

Names import lazily, so `oddspot.features.weights` (weights files and URLs, no torch at import)
serves torch-free configs too.
"""

from oddspot.lazy import lazy_exports

__all__ = ["Backbone", "FeatureExtractor", "build_backbone"]
__getattr__, __dir__ = lazy_exports(__name__, {"Backbone": "backbone", "FeatureExtractor": "extractor",
                                               "build_backbone": "backbone"})
