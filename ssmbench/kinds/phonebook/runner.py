"""kind: phonebook — in-context retrieval from a phonebook in the prompt, scored for exact and fuzzy recall.

Per point (format, book size, query position): `queries` prompts, each on its own seeded book
(ssmbench.data.phonebook), decoded greedily through the model's own decoder (ssmbench.models.generate,
the fused kernels on CUDA), the answer being the first generated line. Metrics, means over the queries
with their standard error:

    exact_match      the answer is the number
    digit_accuracy   share of the 10 digits right and in place (Waleffe et al.'s "fuzzy memory")
    edit_distance    Levenshtein distance from the number

A book whose prompts do not fit the model's context (GPT-2's 1,024 positions, Pythia's 2,048-token
training context) is not run: the point is recorded as skipped, "n/a (context)", with the token counts.
A few prompts and answers of each point go to the job's artifacts (examples.jsonl), so a cell can be read
back as text.
"""

from __future__ import annotations

import json
import math
import statistics
from typing import Any

from ssmbench.jobs import Point, point
from ssmbench.kinds.base import TextRunner
from ssmbench.kinds.phonebook.task import PhonebookTask
from ssmbench.records import Record
from ssmbench.zoo import ResolvedModel

EXAMPLES = "examples.jsonl"


class PhonebookRunner(TextRunner[PhonebookTask]):
    @classmethod
    def points(cls, task: PhonebookTask, model: ResolvedModel | None, device: str) -> list[Point]:
        return [point(format=fmt, book_size=size, position=position)
                for fmt in task.formats for size in task.book_sizes for position in task.positions]

    def measure(self, pt: Point) -> list[Record]:
        from ssmbench.data.phonebook import make_queries, score_answer
        from ssmbench.models.generate import encode, generate_until

        task = self.task
        queries = make_queries(pt.params["book_size"], task.queries, pt.params["position"], pt.params["format"],
                               seed=self.job.seed)
        lengths = [len(encode(self.tokenizer, q.prompt)) for q in queries]
        self.check_context(max(lengths))
        answers = generate_until(self.model, [q.prompt for q in queries], task.max_new_tokens, until="\n",
                                 cuda_graphs=self.graphs(), batch_size=task.batch_size,
                                 tokenizer=self.tokenizer)
        scores = [score_answer(a.text, q.answer) for a, q in zip(answers, queries, strict=True)]
        self._keep_examples(pt, queries, answers, scores)
        extra = {"n_queries": len(queries), "prompt_tokens_mean": statistics.fmean(lengths),
                 "prompt_tokens_max": max(lengths), "stopped_at_newline": sum(a.stopped for a in answers)}
        return [self._record(pt, "exact_match", [float(s.exact) for s in scores], "fraction", True, extra),
                self._record(pt, "digit_accuracy", [s.digit_accuracy for s in scores], "fraction", True, extra),
                self._record(pt, "edit_distance", [float(s.edit_distance) for s in scores], "edits", False, extra)]

    def _record(self, pt: Point, metric: str, values: list[float], unit: str, higher: bool,
                extra: dict[str, Any]) -> Record:
        mean = statistics.fmean(values)
        stderr = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None
        return self.record(pt, metric=metric, value=mean, stderr=stderr, unit=unit, higher_is_better=higher,
                           cuda_graphs=self.graphs(), extra=extra)

    def _keep_examples(self, pt: Point, queries: list[Any], answers: list[Any], scores: list[Any]) -> None:
        if not self.task.examples:
            return
        with self.context.artifact(EXAMPLES).open("a", encoding="utf-8") as out:
            for query, answer, score in list(zip(queries, answers, scores, strict=True))[:self.task.examples]:
                out.write(json.dumps({"point": pt.key, "name": query.name, "number": query.answer,
                                      "answer": answer.text, "exact": score.exact,
                                      "digit_accuracy": score.digit_accuracy, "edit_distance": score.edit_distance,
                                      "prompt": query.prompt}) + "\n")
