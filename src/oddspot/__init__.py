"""oddspot: visual anomaly detection that learns from normal data only and runs offline on a CPU."""

__version__ = "0.1.0"

from oddspot.errors import OddspotError

__all__ = ["OddspotError", "__version__"]
