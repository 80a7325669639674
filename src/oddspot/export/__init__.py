"""Export fitted models to OpenVINO / ONNX graphs, and load any run for inference with a chosen runtime.

`load_for_inference(run, runtime="auto")` is what predict, evaluate, the service and the Ray
engine call: it returns a model with `predict`, running on torch, OpenVINO or ONNX Runtime.
"""

from oddspot.choices import RUNTIMES
from oddspot.lazy import lazy_exports

__all__ = ["RUNTIMES", "export_run", "load_for_inference"]
__getattr__, __dir__ = lazy_exports(__name__, {"load_for_inference": "choice", "export_run": "folder"})
