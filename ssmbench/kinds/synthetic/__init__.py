"""kind: synthetic — capability tasks (selective copying, induction heads, MQAR) on small models trained
from scratch inside the run."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.synthetic.runner import SyntheticRunner
from ssmbench.kinds.synthetic.task import SyntheticTask
from ssmbench.kinds.synthetic.views import capability_summary, plot_synthetic, synthetic_tables

KIND = Kind(
    name="synthetic",
    task=SyntheticTask,
    runner=SyntheticRunner,
    description="selective copying, induction heads and MQAR: small models trained from scratch, tested by length",
    quality=False,  # the models are trained inside the run: there are no weights to refuse
    metric_order=("accuracy", "example_accuracy", "train_accuracy", "final_loss", "steps_per_s"),
    views=synthetic_tables,
    plotter=plot_synthetic,
    summary=capability_summary,
)
