"""kind: zero_shot — lm-eval tasks, reported as the Mamba paper and the source slides print them."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.zero_shot.runner import ZeroShotRunner
from ssmbench.kinds.zero_shot.task import ZeroShotTask
from ssmbench.kinds.zero_shot.views import zero_shot_tables

KIND = Kind(
    name="zero_shot",
    task=ZeroShotTask,
    runner=ZeroShotRunner,
    description="lm-eval zero-shot accuracy on the Mamba paper's six tasks (LAMBADA, HellaSwag, PIQA, ARC, "
                "WinoGrande)",
    quality=True,
    views=zero_shot_tables,
)
