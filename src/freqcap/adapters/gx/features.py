"""The feature-table gate: `resources/gx/features.json` on every table a features run built, before Feast sees it.

The suite file is declarative but not tied to one window set: expectations with `meta.applies_to: tier` run on each
tier table, and their placeholders are filled from that tier's configuration (`FeaturesConfig`) at run time:

- `{entity}`: the tier's key column; `{longest}`: its longest window;
- `meta.for_each: count_column` repeats the expectation for every count column (`{column}`);
- `meta.for_each: window_pair` repeats it for each count prefix and each pair of consecutive windows
  (`{prefix}`, `{shorter}`, `{longer}`), which gives 1h ≤ 24h ≤ 7d ≤ 28d for the default windows and whatever
  ordering another configuration has.

`meta.applies_to: user` expectations run on the user table. `meta.requires: previous_run` (the row-count change)
is skipped on a first run. The previous run's row count per table is kept next to the Feast snapshots in
`row_counts.json` (`record_row_counts`, written when a run is published); the gate compares with the newest entry
strictly before its own as-of time, within `ValidationConfig.max_row_count_ratio` either way.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from freqcap.adapters.gx.errors import DataValidationError, ValidationSuiteError
from freqcap.adapters.gx.gate import (
    GateReport,
    TableRun,
    finish,
    read_suite_document,
    run_table,
    to_gx_frame,
)
from freqcap.config import FeaturesConfig, TierConfig
from freqcap.domain.features import COUNT_PREFIXES, USER_FEATURE_COLUMNS, USER_TABLE, TierTable, tier_table
from freqcap.errors import FeatureValidationError
from freqcap.resources import suite_path as packaged_suite

log = logging.getLogger(__name__)

SUITE_FILE = "features.json"
_HISTORY = 400  # row-count entries kept per table (a year of daily runs and then some)
_FOR_EACH = ("count_column", "window_pair")
_APPLIES_TO = ("tier", "user")


class FeatureGateError(DataValidationError, FeatureValidationError):
    """The feature tables failed `resources/gx/features.json`; the message names each failed `table.rule`."""


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    """`value` with every `{placeholder}` in its strings replaced (recursively through lists and dicts)."""
    if isinstance(value, str):
        for key, text in values.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, list):
        return [_fill(v, values) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, values) for k, v in value.items()}
    return value


def expand_for_tier(expectations: list[dict[str, Any]], table: TierTable, tier: TierConfig) -> list[dict[str, Any]]:
    """The `applies_to: tier` expectations of the suite, expanded for one tier's windows (see the module doc)."""
    base = {"entity": table.entity_column, "longest": tier.longest_window}
    out: list[dict[str, Any]] = []
    for exp in expectations:
        meta = exp.get("meta") or {}
        if meta.get("applies_to") != "tier":
            continue
        for_each = meta.get("for_each")
        if for_each == "count_column":
            combos = [{"column": c} for c in table.count_columns]
        elif for_each == "window_pair":
            combos = [
                {"prefix": p, "shorter": a, "longer": b}
                for p in COUNT_PREFIXES.values()
                for a, b in itertools.pairwise(tier.windows)
            ]
        else:
            combos = [{}]
        for combo in combos:
            out.append(_fill(exp, {**base, **combo}))
    return out


def load_feature_suite(path: str | Path | None = None) -> tuple[Path, dict[str, Any]]:
    """(path, document) of the feature suite, checked: every expectation says which tables it applies to."""
    path = Path(path) if path is not None else packaged_suite(SUITE_FILE)
    doc = read_suite_document(path)
    for i, exp in enumerate(doc["expectations"]):
        meta = exp.get("meta") or {}
        if meta.get("applies_to") not in _APPLIES_TO:
            raise ValidationSuiteError(f"{path}: expectations[{i}] needs meta.applies_to, one of {_APPLIES_TO}")
        if meta.get("for_each") not in (None, *_FOR_EACH):
            raise ValidationSuiteError(f"{path}: expectations[{i}]: meta.for_each must be one of {_FOR_EACH}")
        if meta.get("for_each") and meta["applies_to"] != "tier":
            raise ValidationSuiteError(f"{path}: expectations[{i}]: meta.for_each only applies to tier tables")
    return path, doc


# ------------------------------------------------------------------------------------------- row-count history


def read_row_counts(path: Path) -> dict[str, list[dict[str, Any]]]:
    """{table: [{"as_of": iso, "rows": n}, ...]} from `path` ({} when there is none yet)."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FeatureValidationError(f"cannot read the row-count history {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FeatureValidationError(f"row-count history {path} is not a JSON object")
    return data


def previous_row_counts(path: Path, as_of: datetime) -> dict[str, tuple[datetime, int]]:
    """{table: (as_of, rows)} of the newest recorded run strictly before `as_of`, per table."""
    out: dict[str, tuple[datetime, int]] = {}
    for table, entries in read_row_counts(path).items():
        earlier = [(datetime.fromisoformat(e["as_of"]), int(e["rows"])) for e in entries]
        earlier = [e for e in earlier if e[0] < as_of]
        if earlier:
            out[table] = max(earlier)
    return out


def record_row_counts(path: Path, as_of: datetime, rows: Mapping[str, int]) -> Path:
    """Add (or replace) this run's row count per table in the history at `path`; written atomically."""
    path = Path(path)
    data = read_row_counts(path)
    stamp = as_of.astimezone(UTC).isoformat()
    for table, n in rows.items():
        entries = [e for e in data.get(table, []) if e.get("as_of") != stamp]
        entries.append({"as_of": stamp, "rows": int(n)})
        entries.sort(key=lambda e: datetime.fromisoformat(e["as_of"]))
        data[table] = entries[-_HISTORY:]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def row_count_bounds(previous: int, ratio: float) -> tuple[int, int]:
    """[ceil(previous / ratio), floor(previous × ratio)]: the rows a run may have after `previous`."""
    return math.ceil(previous / ratio - 1e-9), math.floor(previous * ratio + 1e-9)


# ----------------------------------------------------------------------------------------------------- the gate


def _expected_columns(table: TierTable | None) -> list[str]:
    if table is None:
        return ["user_id", *USER_FEATURE_COLUMNS, "event_timestamp"]
    return ["user_id", table.entity_column, *table.feature_columns, "event_timestamp"]


def validate_feature_tables(
    paths: Mapping[str, str | Path],
    as_of: datetime,
    features: FeaturesConfig,
    *,
    max_row_count_ratio: float,
    previous_rows: Mapping[str, int] | None = None,
    suite_path: str | Path | None = None,
    docs_root: Path | None = None,
) -> GateReport:
    """Run the feature suite on each built table (`paths`: table name -> Parquet, as `build_features` writes them).

    `previous_rows` holds the previous run's row count per table (absent tables: the row-count rule is skipped).
    With `docs_root` the results are published to the Data Docs site there. Returns the report when every
    expectation holds; raises `FeatureGateError` naming each failed `table.rule` with what was observed.
    """
    started = time.perf_counter()
    if as_of.tzinfo is None:
        raise ValueError("as_of must be timezone-aware (UTC)")
    as_of = as_of.astimezone(UTC)
    suite_path, doc = load_feature_suite(suite_path)
    previous_rows = dict(previous_rows or {})
    tables: list[tuple[str, TierTable | None, TierConfig | None]] = [
        (tier_table(t).name, tier_table(t), t) for t in features.tiers
    ]
    tables.append((USER_TABLE, None, None))
    missing = [name for name, _, _ in tables if name not in paths]
    if missing:
        raise FeatureValidationError(f"feature gate: no table file for {missing} (got {sorted(paths)})")

    runs: list[TableRun] = []
    all_parameters: dict[str, Any] = {}
    for name, table, tier in tables:
        frame = to_gx_frame(pq.read_table(paths[name]))
        if table is not None and tier is not None:
            expectations = expand_for_tier(doc["expectations"], table, tier)
            window_start = as_of - timedelta(seconds=tier.window_seconds[tier.longest_window])
        else:
            expectations = [e for e in doc["expectations"] if (e.get("meta") or {}).get("applies_to") == "user"]
            window_start = None
        parameters: dict[str, Any] = {"as_of": as_of, "columns": _expected_columns(table)}
        if window_start is not None:
            parameters["window_start"] = window_start
        skip: dict[str, str] = {}
        previous = previous_rows.get(name)
        if previous:
            parameters["min_rows"], parameters["max_rows"] = row_count_bounds(previous, max_row_count_ratio)
            parameters["previous_rows"] = previous
        for exp in expectations:
            meta = exp.get("meta") or {}
            if meta.get("requires") == "previous_run" and not previous:
                skip[meta["rule"]] = "no previous run recorded" if previous is None else "previous run had no rows"
        runs.append(
            run_table(
                frame,
                expectations,
                suite_name=f"{doc['name']}.{name}",
                table=name,
                parameters=parameters,
                skip=skip,
                label_table=True,
            )
        )
        all_parameters[name] = parameters
        del frame
    report = finish(
        "feature",
        doc["name"],
        suite_path,
        runs,
        parameters=all_parameters,
        started=started,
        context={"as_of": as_of.isoformat()},
        docs_root=docs_root,
    )
    message = report.failure_message()
    if message:
        log.error("%s", message)
        raise FeatureGateError(message, report)
    return report
