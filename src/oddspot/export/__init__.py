"""Export fitted models to OpenVINO / ONNX graphs, and load any run for inference with a chosen runtime.

`load_for_inference(run, runtime="auto")` is what predict, evaluate, the service and the Ray
engine call: it returns a model with `predict`, running on torch, OpenVINO or ONNX Runtime.
"""

from oddspot.export.choice import RUNTIMES, load_for_inference

__all__ = ["RUNTIMES", "load_for_inference"]
