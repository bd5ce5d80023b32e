"""The suite entry of kind `generate`: prompts given in the suite, every model's continuation side by side.

    - kind: generate
      name: in-context
      prompts:                          # name: text, in the order the table shows them
        translation: "mom - maman; dad - papa; cat - chat; dog - chien; green -"
      max_new_tokens: 24
      until: ";"                        # the shown text is cut at the first of these (null: keep it all)
      sampling: {temperature: 0.8, top_k: 50, seeds: [0, 1]}   # optional, beside the greedy continuation
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, PositiveInt, field_validator

from ssmbench.jobs import Strict, TaskBase


class Sampling(Strict):
    """Sampled continuations beside the greedy one: softmax(logits / temperature) over the top_k tokens,
    one continuation per seed (the same seed gives the same text on the same device and weights)."""

    temperature: PositiveFloat = 1.0  # softmax(logits / temperature)
    top_k: PositiveInt | None = 50  # sample among the k likeliest tokens; null: among all
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)  # one sampled continuation per seed


# The lecture's in-context prompts: a word-translation list and an antonym list, each ending where the model
# must carry on the pattern.
DEFAULT_PROMPTS = {
    "translation": "mom - maman; dad - papa; cat - chat; dog - chien; house - maison; water - eau; green -",
    "antonyms": "hot - cold; big - small; up - down; fast - slow; happy - sad; early - late; light -",
}


class GenerateTask(TaskBase):
    """Each model continues each prompt: greedy (decoded through the same loop, and on CUDA from the same
    graph, as the throughput figures), and sampled with seeds if asked. The text and the rate are recorded."""

    kind: Literal["generate"]
    # name -> prompt text
    prompts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_PROMPTS))
    max_new_tokens: PositiveInt = 32  # tokens generated per continuation
    until: str | None = "\n"  # the shown text is cut at this string (null: all of it)
    sampling: Sampling | None = None  # sampled continuations beside the greedy one (absent: greedy only)
    repeats: Annotated[int, Field(ge=1)] = 3  # timed greedy generations per prompt (the text is the same each time)
    cuda_graphs: Literal["auto"] | bool = "auto"  # greedy decode steps from a CUDA graph (auto: on CUDA, where the model can)

    @field_validator("prompts")
    @classmethod
    def _named_prompts(cls, prompts: dict[str, str]) -> dict[str, str]:
        if not prompts:
            raise ValueError("give at least one prompt (name: text)")
        for name, text in prompts.items():
            if not text:
                raise ValueError(f"{name}: the prompt is empty")
        return prompts

    def modes(self) -> list[tuple[str, int | None]]:
        """(mode, sampling seed) of each continuation: greedy, then one per sampling seed."""
        sampled = [("sampled", seed) for seed in self.sampling.seeds] if self.sampling is not None else []
        return [("greedy", None), *sampled]
