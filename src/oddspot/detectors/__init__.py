"""Inspect detectors (PatchCore, PaDiM, Cascade) on the run contract, and the Detector protocol.

Names are imported on first use (`oddspot.lazy`): the torch-free parts (`base`, `patchcore_head`)
can be used without importing torch.
"""

from oddspot.lazy import lazy_exports

__all__ = ["Cascade", "CascadeConfig", "Detector", "PaDiM", "PaDiMConfig", "PatchCore", "PatchCoreConfig", "Prediction"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "Cascade": "cascade", "CascadeConfig": "cascade_head", "Detector": "base", "PaDiM": "padim", "PaDiMConfig": "padim_head",
    "PatchCore": "patchcore", "PatchCoreConfig": "patchcore_head", "Prediction": "base",
})
