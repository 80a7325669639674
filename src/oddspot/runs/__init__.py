"""The run contract (one folder format for every model), the model registry and `Prediction`."""

from oddspot.runs.contract import FORMAT_VERSION, MODEL_FILE, TENSORS_FILE, Record, load_record, save_record
from oddspot.runs.model import Model, RunModel
from oddspot.runs.prediction import Prediction
from oddspot.runs.registry import MODELS, build_model, kinds, load_model, model_class

__all__ = [
    "FORMAT_VERSION", "MODELS", "MODEL_FILE", "TENSORS_FILE", "Model", "Prediction", "Record", "RunModel",
    "build_model", "kinds", "load_model", "load_record", "model_class", "save_record",
]
