"""Studies from one config file: protocols (clean, shift, global model) x detectors x ablation grids.

`load_config(path)` parses a study; `run_experiment(config)` runs its cells resumably and writes
results.csv, results.md and plots. See examples/README.md for the config format. A config with
`task: road` is a road study instead (`road_config`, `road_runner`, `road_tables`): option grids of
the road model repeated over seeds, with mean +- std tables (docs/road-scores.md).
"""

from oddspot.experiments.config import PROTOCOLS, Cell, ExperimentConfig, load_config
from oddspot.experiments.road_config import RoadCell, RoadStudyConfig
from oddspot.experiments.runner import run_experiment

__all__ = ["PROTOCOLS", "Cell", "ExperimentConfig", "RoadCell", "RoadStudyConfig", "load_config", "run_experiment"]
