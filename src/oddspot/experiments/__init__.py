"""Studies from one config file: protocols (clean, shift, global model) x detectors x ablation grids.

`load_config(path)` parses a study; `run_experiment(config)` runs its cells resumably and writes
results.csv, results.md and plots. See examples/README.md for the config format.
"""

from oddspot.experiments.config import PROTOCOLS, Cell, ExperimentConfig, load_config
from oddspot.experiments.runner import run_experiment

__all__ = ["PROTOCOLS", "Cell", "ExperimentConfig", "load_config", "run_experiment"]
