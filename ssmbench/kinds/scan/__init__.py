"""kind: scan — the selective-scan kernel against causal attention and a PyTorch scan (no models)."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.scan.runner import ScanRunner
from ssmbench.kinds.scan.task import ScanTask
from ssmbench.kinds.scan.views import plot_scan, scan_tables

KIND = Kind(
    name="scan",
    task=ScanTask,
    runner=ScanRunner,
    description="selective-scan kernel vs causal attention (SDPA) vs a PyTorch scan, by sequence length",
    metric_order=("ms", "gb_s"),
    views=scan_tables,
    plotter=plot_scan,
)
