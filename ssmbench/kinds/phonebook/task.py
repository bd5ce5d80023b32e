"""The suite entry of kind `phonebook`."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, PositiveInt

from ssmbench.jobs import TaskBase

Position = Literal["start", "middle", "end", "random"]  # ssmbench.data.phonebook.POSITIONS
Format = Literal["standard", "reversed"]  # ssmbench.data.phonebook.FORMATS


class PhonebookTask(TaskBase):
    """In-context retrieval: copy one person's number out of a phonebook given in the prompt.

    A point is (format, book size, query position), with `queries` prompts, each on its own seeded book.
    """

    kind: Literal["phonebook"]
    book_sizes: list[Annotated[int, Field(ge=3)]] = [20, 50, 100, 200, 500, 1000]  # entries; a query needs 3
    # where the queried entry sits: the first, middle or last tenth of the book, or anywhere
    positions: list[Position] = ["start", "middle", "end", "random"]
    # standard: the book, then the query; reversed: the name asked for first, then the book
    formats: list[Format] = ["standard"]
    queries: PositiveInt = 20  # prompts per point
    max_new_tokens: PositiveInt = 16  # the number is 4-6 tokens and a newline for GPT-2 and GPT-NeoX
    batch_size: PositiveInt = 8  # prompts of equal token length decoded together (never padded)
    # decode steps from a CUDA graph, as the throughput kind does (auto: on CUDA, where the model can)
    cuda_graphs: Literal["auto"] | bool = "auto"
    examples: Annotated[int, Field(ge=0)] = 2  # prompts and answers per point kept in the job's artifacts
