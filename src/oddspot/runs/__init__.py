"""The run contract: every model of every task is one folder, saved and loaded by one code path.

Names are imported on first use (`oddspot.lazy`), so the registry's model kinds cost no numpy.
"""

from oddspot.lazy import lazy_exports

__all__ = ["FORMAT_VERSION", "MODELS", "MODEL_FILE", "Model", "Prediction", "Record", "RunModel", "TENSORS_FILE",
           "build_model", "kinds", "load_model", "load_record", "model_class", "save_record"]
__getattr__, __dir__ = lazy_exports(__name__, {
    "FORMAT_VERSION": "contract", "MODEL_FILE": "contract", "TENSORS_FILE": "contract", "Record": "contract",
    "load_record": "contract", "save_record": "contract", "Model": "model", "RunModel": "model",
    "Prediction": "prediction", "MODELS": "registry", "build_model": "registry", "kinds": "registry",
    "load_model": "registry", "model_class": "registry",
})
