"""Detectors: PatchCore (and more), one Detector protocol."""

from oddspot.detectors.base import Detector, Prediction
from oddspot.detectors.patchcore import PatchCore, PatchCoreConfig

__all__ = ["Detector", "PatchCore", "PatchCoreConfig", "Prediction"]
