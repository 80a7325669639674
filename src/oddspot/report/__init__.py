"""Plots and the self-contained HTML report (`oddspot report DIR`).

`write_report(folder)` renders an evaluate, demo or experiment output into `folder/report.html`:
one file with every image and plot inlined, no network, opening from `file://`.
"""

from oddspot.report.build import SIZE_BUDGET, build_report, write_report

__all__ = ["SIZE_BUDGET", "build_report", "write_report"]
