"""The names a user chooses among on the command line, defined once and free of heavy imports.

The modules that implement them import them from here, and the command line builds its choices
from here without importing numpy, PIL or torch: `oddspot --help` starts fast.
"""

TASKS = ("inspect", "road", "video")
CALIBRATION_STRATEGIES = ("auto", "f1", "synthetic", "quantile", "fixed")
TEXTURES = ("brick", "grass", "gravel")
PROTOCOLS = ("validation", "standard")
SEVERITY_SCALE = {"mild": 0.5, "moderate": 1.0, "severe": 1.5}
SHIFT_FAMILIES = {
    "geometric": ("rotation", "crop", "translation"),
    "photometric": ("color", "blur", "noise"),
    "illumination": ("illumination",),
}
SHIFT_TRANSFORMS = tuple(t for family in SHIFT_FAMILIES.values() for t in family)
SHIFT_ONLY = tuple(SHIFT_FAMILIES) + SHIFT_TRANSFORMS
# Pixel budget per image, frame and mask (checked from the header before decoding).
DEFAULT_MAX_PIXELS = 64_000_000
# The largest budget one can set: PIL refuses images over twice its MAX_IMAGE_PIXELS on its own.
MAX_PIXELS_LIMIT = 2 * 89_478_485
RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "int8")
EXPORT_FORMATS = ("openvino", "onnx")
SEARCHES = ("exact", "ivf", "hnsw")
