"""Graphs of the inspect PaDiM and Cascade: the pixels -> features trunk that PatchCore exports, per model.

A PaDiM's trunk ends at its kept channels on the grid (`PaDiM.trunk_features`); a cascade has
two, `gate` (its PatchCore gate) and `localizer` (its PatchCore or PaDiM), each the trunk of that
part at its own input size. The Gaussians, the memory banks and every distance stay in numpy.
`oddspot.export.graphs` lists these builders in `GRAPH_BUILDERS` (and so is imported here only
when a builder runs).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from oddspot.export.graphs import TorchGraph


def padim_graphs(model: Any) -> dict[str, TorchGraph]:
    """{"trunk": 1 x S x S x 3 pixels (0..255) -> 1 x h x w x d PaDiM features at the kept channels}."""
    from oddspot.export.graphs import patchcore_graphs

    return patchcore_graphs(model)  # the same wrapper: scaling + `model.trunk_features`


def cascade_graphs(model: Any) -> dict[str, TorchGraph]:
    """{"gate": the gate PatchCore's trunk, "localizer": the localizer's trunk}, each at its part's image size."""
    from oddspot.export.graphs import GRAPH_BUILDERS

    return {part: GRAPH_BUILDERS[(sub.task, sub.kind)](sub)["trunk"]
            for part, sub in (("gate", model.gate), ("localizer", model.localizer))}
