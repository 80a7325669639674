"""The inspect task (MVTec-style images) end to end: fit, predict, evaluate, demo, data.

Data flows one way: dataset reader and split manifest -> detector (`oddspot.detectors`) ->
scores, maps and calibrated decisions -> metrics and the evaluation record -> files.

- `fit(data, category, out, model=...)`: fit on the train split, calibrate on validation, save the run;
- `predict(run, inputs, out)`: score image files (scores.csv, heatmaps, masks);
- `evaluate(run, data, category, out)`: metrics.json, scores.csv, curves.json and gallery material;
- `demo(out)` / `data(out)`: the offline texture demo, and its dataset alone.
"""

from oddspot.inspect.evaluation import evaluate
from oddspot.inspect.fitting import calibrate_model, fit, recalibrate
from oddspot.inspect.layout import RUN_FILE, SPLIT_FILE, build_detector, load_images, read_run_info, split_test_refs
from oddspot.inspect.quickstart import data, demo
from oddspot.inspect.scoring import collect_inputs, predict

__all__ = [
    "RUN_FILE", "SPLIT_FILE", "build_detector", "calibrate_model", "collect_inputs", "data", "demo", "evaluate", "fit",
    "load_images", "predict", "read_run_info", "recalibrate", "split_test_refs",
]
