"""Inspect detectors (PatchCore, PaDiM, Cascade) on the run contract, and the Detector protocol."""

from oddspot.detectors.base import Detector, Prediction
from oddspot.detectors.cascade import Cascade, CascadeConfig
from oddspot.detectors.padim import PaDiM, PaDiMConfig
from oddspot.detectors.patchcore import PatchCore, PatchCoreConfig

__all__ = ["Cascade", "CascadeConfig", "Detector", "PaDiM", "PaDiMConfig", "PatchCore", "PatchCoreConfig", "Prediction"]
