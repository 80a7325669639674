"""Plots and the self-contained HTML report (`oddspot report DIR`).

`write_report(folder)` renders an evaluation record, a demo or an experiment folder into
`folder/report.html`: one file with every image and plot inlined, no network, opening from
`file://`. It reads only the files evaluate wrote (`oddspot.records`), never a model or a dataset.
"""

from oddspot.report.build import SIZE_BUDGET, build_report, write_report

__all__ = ["SIZE_BUDGET", "build_report", "write_report"]
