"""kind: synthetic — capability tasks (selective copying, induction heads, MQAR, MAD's six) on small models
trained from scratch inside the run."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.synthetic.mad_views import plots, summary, tables
from ssmbench.kinds.synthetic.runner import SyntheticRunner
from ssmbench.kinds.synthetic.task import SyntheticTask

KIND = Kind(
    name="synthetic",
    task=SyntheticTask,
    runner=SyntheticRunner,
    description="selective copying, induction heads, MQAR and MAD's six tasks: small models trained from scratch",
    quality=False,  # the models are trained inside the run: there are no weights to refuse
    metric_order=("accuracy", "example_accuracy", "train_accuracy", "final_loss", "steps_per_s"),
    views=tables,
    plotter=plots,
    summary=summary,
)
