"""kind: phonebook — in-context retrieval of a number from a phonebook in the prompt (exact and fuzzy)."""

from ssmbench.kinds.base import Kind
from ssmbench.kinds.phonebook.runner import PhonebookRunner
from ssmbench.kinds.phonebook.task import PhonebookTask
from ssmbench.kinds.phonebook.views import phonebook_tables, plot_phonebook

KIND = Kind(
    name="phonebook",
    task=PhonebookTask,
    runner=PhonebookRunner,
    description="phonebook recall by book size and query position: exact match, digit accuracy, edit distance",
    quality=True,
    metric_order=("exact_match", "digit_accuracy", "edit_distance"),
    views=phonebook_tables,
    plotter=plot_phonebook,
)
