"""Resolving a DAG run's parameters into plain values for the job functions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from freqcap.layout import parse_as_of


def run_as_of(context: dict[str, Any]) -> datetime:
    """The as-of time of a run: the `as_of` param if given (backfills), else the end of its data interval."""
    param = (context.get("params") or {}).get("as_of")
    if param:
        return parse_as_of(param)
    for key in ("data_interval_end", "logical_date"):
        value = context.get(key)
        if value is not None:
            return parse_as_of(value)
    return parse_as_of(context["dag_run"].run_after)
