"""Reports: one self-contained HTML page per run (``write_report``) or for several runs side by side
(``compare_runs``), with tables of every evaluation in ``results.json`` and matplotlib charts.

``invarlab report RUN`` and ``invarlab compare RUN_A RUN_B ...`` call these.
"""

from invarlab.report.html import compare_runs, render_compare, render_report, write_report
from invarlab.report.run import RunData, load_run

__all__ = ["RunData", "compare_runs", "load_run", "render_compare", "render_report", "write_report"]
