"""Terminal output: tables on stdout, progress and notes on stderr (so `ssmbench ... > table.md` works)."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

# Piped output gets wide lines rather than rich's 80-column default, so tables are not truncated.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False)


def note(message: str) -> None:
    """A note, wrapped at word boundaries to a terminal's width (one line when piped, for logs and greps)."""
    err.print(f"[yellow]note:[/] {message}", soft_wrap=not err.is_terminal)


def warning(message: str) -> None:
    """Something that makes figures doubtful (duplicate records): louder than a note, not an error."""
    err.print(f"[bold red]warning:[/] {message}", soft_wrap=True)


def failure(message: str) -> None:
    err.print(f"[red]error:[/] {message}", soft_wrap=True)


def point_name(job: str, point: str) -> str:
    """'job [point]' for a note, escaped: rich would take '[batch=1,prompt_len=8]' for markup and drop it."""
    return escape(f"{job} [{point}]")
