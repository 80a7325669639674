"""The inspect task (MVTec-style images) end to end: fit, predict, evaluate, demo, data.

Data flows one way: dataset reader and split manifest -> detector (`oddspot.detectors`) ->
scores, maps and calibrated decisions -> metrics and the evaluation record -> files.

- `fit(data, category, out, model=...)`: fit on the train split, calibrate on validation, save the run;
- `predict(run, inputs, out)`: score image files (scores.csv, heatmaps, masks);
- `evaluate(run, data, category, out)`: metrics.json, scores.csv, curves.json and gallery material;
- `demo(out)` / `data(out)`: the offline texture demo, and its dataset alone.
"""

from oddspot.lazy import lazy_exports

__all__ = [
    "RUN_FILE", "SPLIT_FILE", "build_detector", "calibrate_model", "collect_inputs", "data", "demo", "evaluate", "fit",
    "load_images", "predict", "read_run_info", "recalibrate", "split_test_refs",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "evaluate": "evaluation", "calibrate_model": "fitting", "fit": "fitting", "recalibrate": "fitting", "RUN_FILE":
    "layout", "SPLIT_FILE": "layout", "build_detector": "layout", "load_images": "layout", "read_run_info":
    "layout", "split_test_refs": "layout", "data": "quickstart", "demo": "quickstart", "collect_inputs": "scoring",
    "predict": "scoring",
})
