"""Tables of kind `generate`: the models' continuations side by side, and the rate each came at.

- continuations: a row per prompt and mode (greedy, or sampled with a seed), a column per model, the text
  the model wrote (cut at the task's `until`; newlines shown as ⏎, long texts shortened with …; the whole
  text is in the records), with each prompt's text and how it was decoded in the notes.
- generation rate: the same rows, tok/s of each continuation (new tokens over prefill + decode time).
A point that could not run shows ERR, OOM or — with its reason in the notes.
"""

from __future__ import annotations

import pandas as pd

from ssmbench.report.tables import SMOKE_NOTE, STATUS_CELL, Table, failure_notes, format_value, how_obtained

SHOWN_CHARS = 72  # of a continuation in a table cell


def generate_tables(task: str, frame: pd.DataFrame) -> list[Table]:
    models = list(dict.fromkeys(frame["model"].dropna()))
    rows: dict[tuple[str, str], dict[str, str]] = {}
    rates: dict[tuple[str, str], dict[str, str]] = {}
    prompts: dict[str, tuple[int, str]] = {}  # name -> prompt tokens, under the first model's tokenizer
    for record in frame.to_dict("records"):
        key = (record["slice.prompt"], _mode(record))
        extra = record["extra"] if isinstance(record["extra"], dict) else {}
        if record["status"] == "ok":
            rows.setdefault(key, {})[record["model"]] = shown(extra.get("text", ""))
            rates.setdefault(key, {})[record["model"]] = format_value(record["value"])
            prompts.setdefault(record["slice.prompt"], (extra.get("prompt_tokens", 0), record["model"]))
        else:  # the reason is in the notes, once per model and message
            cell = STATUS_CELL.get(record["status"], "ERR")
            rows.setdefault(key, {})[record["model"]] = cell
            rates.setdefault(key, {})[record["model"]] = cell
    order = sorted(rows, key=lambda k: (list(dict.fromkeys(frame["slice.prompt"])).index(k[0]), k[1] != "greedy", k[1]))
    text = pd.DataFrame([{"prompt": p, "mode": m, **{model: rows[p, m].get(model, "") for model in models}}
                         for p, m in order])
    speed = pd.DataFrame([{"prompt": p, "mode": m, **{model: rates[p, m].get(model, "") for model in models}}
                          for p, m in order])
    notes = [f"{name}: {_prompt_text(frame, name)!r} ({tokens} tokens with {model}'s tokenizer)"
             for name, (tokens, model) in prompts.items()]
    notes += [_how(frame), *failure_notes(frame)]
    if (frame["weights"] == "random").any():
        notes.insert(0, SMOKE_NOTE)
    return [Table(f"{task}: continuations, side by side", text, notes, task),
            Table(f"{task}: generation rate (tok/s)", speed,
                  ["New tokens ÷ time of prefill + decode (CUDA events on a GPU), batch 1; greedy: median of the task's repeats after "
                   "an untimed run; sampled: one run, without CUDA graphs"], task)]


def shown(text: str) -> str:
    """A continuation as a table cell: newlines as ⏎, pipes escaped, at most SHOWN_CHARS characters."""
    text = text.replace("\n", "⏎").replace("|", "\\|")
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"


def _mode(record: dict) -> str:
    seed = record.get("slice.sample_seed")
    return "greedy" if record["slice.mode"] == "greedy" else f"sampled, seed {int(seed)}"


def _prompt_text(frame: pd.DataFrame, name: str) -> str:
    """The prompt's text as the suite gave it (every record keeps it in extra.prompt)."""
    rows = frame[(frame["slice.prompt"] == name) & frame["extra"].map(lambda e: isinstance(e, dict) and "prompt" in e)]
    return str(rows["extra"].iloc[0]["prompt"]) if len(rows) else name


def _how(frame: pd.DataFrame) -> str:
    how = how_obtained(frame)
    if not how:
        return "Nothing was decoded"
    parts = [f"{model}: {h['kernel']}, {h['weights']} weights, CUDA graphs {h['graphs']} (sampled points never)"
             for model, h in how.items()]
    return "Decoded through each backend's own decode loop, batch 1, unpadded: " + "; ".join(parts)
