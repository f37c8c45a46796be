"""Errors the `lmforge` command reports in one line (see lmforge.cli.main), kept free of heavy imports
so that the command can name them without loading torch."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """The run cannot continue (e.g. too many non-finite steps); the message says where and why."""
