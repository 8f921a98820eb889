"""Great Expectations over the rows of `ev`, chunk by chunk: per rule, whether it held and which rows it rejected.

Each chunk is validated with `result_format="COMPLETE"` and `unexpected_index_column_names=["_row"]` (the frame
is indexed by `_row`), so each expectation returns the ids of exactly the rows it rejected; their number must equal
GX's `unexpected_count`. Chunks split by `hash(event_id)`, so every copy of an event_id is in the same chunk and
the uniqueness expectation stays exact.

String columns go to GX as pandas categoricals (dictionary-encoded by Arrow). With them GX runs several times
faster than with object or pyarrow-backed strings: null, set and equality checks work on integer codes, row
filters are numpy takes, and GX's fingerprint of each batch (pandas.util.hash_pandas_object) hashes only the
distinct values. Columns compared with each other get the same categories (pandas requires it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd  # why: importing freqcap.adapters.gx stays free of pandas (~0.8 s); GX loads it anyway
import pyarrow as pa

from freqcap.adapters.gx.errors import ValidationSuiteError
from freqcap.adapters.gx.event_tables import ROW_ID, quoted
from freqcap.adapters.gx.gate import plain, raised_exception_message
from freqcap.adapters.gx.runtime import ephemeral_context
from freqcap.adapters.gx.suite import EventSuite, Rule, build_gx_suite
from freqcap.config import ValidationConfig, parse_duration
from freqcap.domain.events import EVENT_COLUMNS

log = logging.getLogger(__name__)


@dataclass
class RuleTally:
    """One rule's results summed over the chunks."""

    rule: Rule
    success: bool = True
    unexpected: int = 0
    elements: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    observed: Any = None  # batch-level rules: what GX observed (e.g. the newest event_ts)


def run_suite(
    gx: Any,
    con: duckdb.DuckDBPyConnection,
    suite: EventSuite,
    active: tuple[Rule, ...],
    n_events: int,
    chunk_rows: int,
    config: ValidationConfig,
    max_event_ts: datetime,
) -> dict[str, RuleTally]:
    """Validate the rows of `ev` (joined to `ref_ads`) with the `active` rules in chunks of about `chunk_rows`;
    the tallies by rule name, in suite order."""
    tallies = {r.name: RuleTally(r) for r in active}
    if n_events == 0:
        return tallies

    context = ephemeral_context(gx)
    batch_definition = (
        context.data_sources.add_pandas("freqcap_events")
        .add_dataframe_asset("events")
        .add_batch_definition_whole_dataframe("batch")
    )
    gx_suite = build_gx_suite(suite, active)
    parameters = suite_parameters(config, max_event_ts)
    result_format = {
        "result_format": "COMPLETE",
        "unexpected_index_column_names": [ROW_ID],
        "exclude_unexpected_values": True,
        "return_unexpected_index_query": False,
        "partial_unexpected_count": 0,
    }
    pairs = [r.columns for r in active if len(r.columns) == 2]
    n_chunks = max(1, math.ceil(n_events / chunk_rows))
    chunk_filter = "" if n_chunks == 1 else f"WHERE hash(e.event_id) % {n_chunks} = $k"
    query = f"""
        SELECT e.{ROW_ID}, {", ".join(f"e.{quoted(c)}" for c in EVENT_COLUMNS)},
               a.ad_id AS _known_ad_id, a.campaign_id AS _catalog_campaign_id,
               a.advertiser_id AS _catalog_advertiser_id
        FROM ev e LEFT JOIN ref_ads a ON e.ad_id = a.ad_id
        {chunk_filter}
    """
    for k in range(n_chunks):
        t = time.perf_counter()
        table = con.sql(query, params={"k": k} if n_chunks > 1 else None).to_arrow_table()
        if table.num_rows == 0:
            continue
        frame = _to_pandas(table, pairs)
        del table
        batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
        result = batch.validate(gx_suite, result_format=result_format, expectation_parameters=parameters)
        for res in result.results:
            _tally(tallies, res)
        del frame, batch, result
        log.info("great expectations: chunk %d/%d validated in %.1fs", k + 1, n_chunks, time.perf_counter() - t)
    return tallies


def _to_pandas(table: pa.Table, pairs: Iterable[tuple[str, ...]] = ()) -> Any:
    """The chunk as a pandas frame indexed by `_row`, strings as categoricals (see the note at the top)."""
    columns = {
        name: (
            table.column(name).dictionary_encode()
            if pa.types.is_string(table.column(name).type)
            else table.column(name)
        )
        for name in table.column_names
        if name != ROW_ID
    }
    frame = pa.table(columns).to_pandas()
    for a, b in pairs:
        if isinstance(frame[a].dtype, pd.CategoricalDtype) and isinstance(frame[b].dtype, pd.CategoricalDtype):
            categories = frame[a].cat.categories.union(frame[b].cat.categories)
            frame[a] = frame[a].cat.set_categories(categories)
            frame[b] = frame[b].cat.set_categories(categories)
    frame.index = pd.Index(table.column(ROW_ID).to_numpy(), name=ROW_ID)
    return frame


def _tally(tallies: dict[str, RuleTally], res: Any) -> None:
    """Add one chunk's result of one expectation to its rule's tally; a result GX cannot vouch for is an error."""
    rule_name = (res.expectation_config.meta or {}).get("rule")
    tally = tallies.get(rule_name)
    if tally is None:
        raise ValidationSuiteError(f"Great Expectations returned a result for an unknown rule {rule_name!r}")
    error = raised_exception_message(res.exception_info)
    if error is not None:
        raise ValidationSuiteError(f"expectation {tally.rule.describe()} (rule {rule_name}) raised: {error}")
    tally.success = tally.success and bool(res.success)
    result = res.result or {}
    if tally.rule.on_failure == "error":
        # What GX saw, for the message: per chunk, so keep the failing chunk's observation (else the last one).
        observed = result.get("observed_value")
        if observed is None and result.get("missing_count"):  # a set expectation: which values never appeared
            value_set = tally.rule.kwargs.get("value_set")
            everything = isinstance(value_set, list) and result["missing_count"] == len(value_set)
            observed = {"missing": value_set} if everything else {"missing_count": result["missing_count"]}
        if observed is not None and (not res.success or tally.observed is None):
            tally.observed = plain(observed)
        return
    if "unexpected_count" not in result:
        raise ValidationSuiteError(
            f"rule {rule_name}: Great Expectations returned no unexpected_count ({result!r:.200})"
        )
    unexpected = int(result["unexpected_count"])
    rows = _unexpected_rows(result.get("unexpected_index_list"))
    if len(rows) != unexpected:
        raise ValidationSuiteError(
            f"rule {rule_name}: Great Expectations counted {unexpected} unexpected rows but returned {len(rows)} row ids"
        )
    tally.unexpected += unexpected
    tally.elements += int(result.get("element_count") or 0)
    if len(rows):
        tally.rows.append(rows)


def _unexpected_rows(index_list: Iterable[Any] | None) -> np.ndarray:
    """The `_row` ids of GX's `unexpected_index_list` (a list of `{"_row": [ids]}` with exclude_unexpected_values)."""
    ids: list[Any] = []
    for item in index_list or ():
        if not isinstance(item, dict) or ROW_ID not in item:
            raise ValidationSuiteError(f"unexpected shape of a GX unexpected_index_list entry: {item!r:.200}")
        value = item[ROW_ID]
        ids.extend(value if isinstance(value, list) else [value])
    return np.asarray(ids, dtype=np.int64)


def suite_parameters(config: ValidationConfig, max_event_ts: datetime) -> dict[str, Any]:
    """The suite's run-time parameters (see `meta.freqcap.parameters` in the suite file)."""
    return {
        "allowed_formats": list(config.allowed_formats),
        "max_event_ts": max_event_ts,
        # The newest event may be at most `max_event_staleness` older than as_of (= max_event_ts - tolerance).
        "min_newest_event_ts": max_event_ts
        - parse_duration(config.future_tolerance)
        - parse_duration(config.max_event_staleness),
    }
