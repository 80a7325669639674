"""The names a user chooses among on the command line, defined once and free of heavy imports.

The modules that implement them import them from here, and the command line builds its choices
from here without importing numpy, PIL or torch: `oddspot --help` starts fast.
"""

TASKS = ("inspect", "road", "video")
CALIBRATION_STRATEGIES = ("auto", "f1", "synthetic", "quantile", "fixed")
TEXTURES = ("brick", "grass", "gravel")
PROTOCOLS = ("validation", "standard")
# Inspection dataset layouts (`oddspot.data.layouts`); "folder" is the generic normal / abnormal / masks layout.
INSPECT_LAYOUTS = ("mvtec", "mvtec_ad2", "visa", "loco", "btech", "ksdd2", "folder")
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
# Road datasets `oddspot road evaluate` reads (`oddspot.data.road_benchmarks`); auto detects from the folder.
ROAD_LAYOUTS = ("auto", "streethazards", "fishyscapes_laf", "fishyscapes_static", "road_anomaly",
                "smiyc_anomaly", "smiyc_obstacle")
# Per-pixel reliability weights of the road HEAT score (`oddspot.road.head.heat_combine`).
HEAT_RELIABILITY = ("variance", "entropy", "none")
# Feature backbones (`oddspot.features`) and their default input sizes; the EfficientNet-Lites ship
# ImageNet weights offline, the ResNets need a weights file or URL.
BACKBONE_SIZES = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260,
                  "resnet18": 224, "resnet50": 224, "wide_resnet50_2": 224}
BACKBONES = tuple(BACKBONE_SIZES)
# Video dataset layouts (`oddspot.video.datasets`); auto detects one from the folder.
VIDEO_LAYOUTS = ("auto", "avenue", "shanghaitech", "ped1", "ped2", "frames")
# Test-time augmentation at video predict/evaluate (`oddspot.video.tta.TTA_VIEWS`); model = as fitted.
VIDEO_TTA = ("model", "none", "hflip", "flips", "all")
# The feature maps a road model's feature-distance scores (mahalanobis, fusion, heat) can use: three
# of the decoder (stride 4) and the two backbone taps themselves (`backbone_low`: the low-level tap,
# `model.low_level`; `backbone_high`: the tap the ASPP reads, `model.high_level`).
FEATURE_SOURCES = ("low_level", "decoder_input", "decoder_output", "backbone_low", "backbone_high")
