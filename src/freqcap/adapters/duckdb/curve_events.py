"""Read an events directory into integer-coded numpy arrays with DuckDB (the I/O side of curve fitting).

One scan of the Parquet files (optionally deduplicated by `event_id`, keeping the earliest copy), string ids
turned into dense integer codes by joins against their distinct values, and three sorted result sets
(impressions, clicks, conversions) fetched as numpy arrays. Rows missing a key column are skipped and counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np

from freqcap.adapters.events_files import parquet_glob
from freqcap.domain.curves.sequences import LEVEL_NAMES, EventArrays

log = logging.getLogger(__name__)
_US = 1_000_000


def _lit(text: str | Path) -> str:
    return "'" + str(text).replace("'", "''") + "'"


@dataclass(frozen=True)
class LoadReport:
    rows_read: int
    rows_skipped: int  # missing keys or unknown event type
    duplicates_dropped: int
    users_with_audience: int
    users_without_audience: int


def load_event_arrays(
    events: str | Path,
    users_path: str | Path | None = None,
    *,
    deduplicate: bool = True,
    data_end: datetime | None = None,
    since: datetime | None = None,
    threads: int = 2,
    memory_limit: str = "4GB",
) -> tuple[EventArrays, LoadReport]:
    """Events (a Parquet file or directory) and optional users.parquet → `EventArrays`.

    `data_end` is the end of the observation (default: the latest event time); it decides which impressions
    have a complete attribution window. `since`: only events at or after it are read.
    """
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {threads}")
        con.execute(f"SET memory_limit = {_lit(memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        src = f"read_parquet({_lit(parquet_glob(events))}, hive_partitioning = false)"
        cols = "event_id, event_type, event_ts, user_id, advertiser_id, campaign_id, ad_id, format, conversion_value"
        keys_ok = (
            "event_type IN ('impression', 'click', 'conversion') AND event_ts IS NOT NULL AND user_id IS NOT NULL "
            "AND advertiser_id IS NOT NULL AND campaign_id IS NOT NULL AND ad_id IS NOT NULL"
        )
        where = "" if since is None else f" WHERE event_ts >= TIMESTAMPTZ {_lit(since.isoformat())}"
        con.execute(f"CREATE TEMP TABLE raw AS SELECT {cols} FROM {src}{where}")
        rows_read, bad, distinct_ids = con.execute(
            f"SELECT count(*), count(*) FILTER (WHERE NOT coalesce({keys_ok}, false)), count(DISTINCT event_id) "
            "FROM raw"
        ).fetchall()[0]
        dupes_present = distinct_ids < rows_read
        if deduplicate and dupes_present:  # the earliest copy of each event_id wins
            con.execute(
                "CREATE TEMP TABLE ev AS SELECT * EXCLUDE (event_id) FROM raw WHERE "
                f"{keys_ok} QUALIFY row_number() OVER (PARTITION BY event_id ORDER BY event_ts) = 1"
            )
        else:
            con.execute(f"CREATE TEMP TABLE ev AS SELECT * EXCLUDE (event_id) FROM raw WHERE {keys_ok}")
        con.execute("DROP TABLE raw")
        kept = con.execute("SELECT count(*) FROM ev").fetchall()[0][0]
        skipped = int(bad)
        duplicates = rows_read - skipped - kept
        if skipped:
            log.warning("skipped %d event rows with a missing key or unknown event_type", skipped)
        if duplicates:
            log.info("dropped %d duplicate event rows (same event_id)", duplicates)
        for name, col in (("u", "user_id"), ("adv", "advertiser_id"), ("cmp", "campaign_id"), ("ad", "ad_id")):
            con.execute(
                f"CREATE TEMP TABLE d_{name} AS SELECT {col}, (row_number() OVER (ORDER BY {col}) - 1)::INTEGER "
                f"AS code FROM (SELECT DISTINCT {col} FROM ev)"
            )
        con.execute(
            "CREATE TEMP TABLE d_fmt AS SELECT fmt, (row_number() OVER (ORDER BY fmt) - 1)::SMALLINT AS code "
            "FROM (SELECT DISTINCT coalesce(format, '') AS fmt FROM ev)"
        )
        joined = """
            SELECT u.code AS u, epoch_us(e.event_ts) AS ts, a.code AS adv, c.code AS cmp, d.code AS ad,
                   f.code AS fmt, e.conversion_value AS value, e.event_type
            FROM ev e JOIN d_u u USING (user_id) JOIN d_adv a USING (advertiser_id)
            JOIN d_cmp c USING (campaign_id) JOIN d_ad d USING (ad_id)
            JOIN d_fmt f ON f.fmt = coalesce(e.format, '')
        """
        imp = con.execute(
            f"SELECT u, ts, adv, cmp, ad, fmt FROM ({joined}) WHERE event_type = 'impression' ORDER BY u, ts"
        ).fetchnumpy()
        clk = con.execute(f"SELECT u, ts FROM ({joined}) WHERE event_type = 'click' ORDER BY u, ts").fetchnumpy()
        cnv = con.execute(
            f"SELECT u, ts, adv, cmp, ad, value FROM ({joined}) WHERE event_type = 'conversion' ORDER BY u, ts"
        ).fetchnumpy()
        n_users = con.execute("SELECT count(*) FROM d_u").fetchall()[0][0]
        n_ent = {
            lv: con.execute(f"SELECT count(*) FROM d_{t}").fetchall()[0][0]
            for lv, t in zip(LEVEL_NAMES, ("adv", "cmp", "ad"), strict=True)
        }
        formats = tuple(r[0] for r in con.execute("SELECT fmt FROM d_fmt ORDER BY code").fetchall())
        if users_path is not None:
            aud = con.execute(
                f"""SELECT u.code, coalesce(p.audience, 'unknown') AS audience FROM d_u u LEFT JOIN (
                    SELECT user_id, any_value(audience) AS audience FROM read_parquet({_lit(users_path)})
                    GROUP BY user_id) p USING (user_id) ORDER BY u.code"""
            ).fetchall()
        else:
            aud = [(i, "unknown") for i in range(n_users)]
        last_ts = con.execute("SELECT max(epoch_us(event_ts)) FROM ev").fetchall()[0][0]
    finally:
        con.close()
    names = sorted({a for _, a in aud})
    code_of = {a: i for i, a in enumerate(names)}
    user_audience = np.array([code_of[a] for _, a in aud], dtype=np.int16)
    end_us = int(data_end.timestamp() * _US) if data_end is not None else int(last_ts or 0)
    ev = EventArrays(
        imp_user=_arr(imp["u"], np.int32),
        imp_ts=_arr(imp["ts"], np.int64),
        imp_entity={
            "advertiser": _arr(imp["adv"], np.int32),
            "campaign": _arr(imp["cmp"], np.int32),
            "ad": _arr(imp["ad"], np.int32),
        },
        imp_format=_arr(imp["fmt"], np.int16),
        click_user=_arr(clk["u"], np.int32),
        click_ts=_arr(clk["ts"], np.int64),
        conv_user=_arr(cnv["u"], np.int32),
        conv_ts=_arr(cnv["ts"], np.int64),
        conv_entity={
            "advertiser": _arr(cnv["adv"], np.int32),
            "campaign": _arr(cnv["cmp"], np.int32),
            "ad": _arr(cnv["ad"], np.int32),
        },
        conv_value=np.ma.filled(np.ma.asarray(cnv["value"]).astype(np.float64), np.nan),
        user_audience=user_audience,
        audiences=tuple(names),
        formats=formats,
        n_entities=n_ent,
        data_end_us=end_us,
    )
    with_aud = int((user_audience != code_of.get("unknown", -1)).sum())
    report = LoadReport(rows_read, skipped, duplicates, with_aud, n_users - with_aud)
    return ev, report


def _arr(values, dtype) -> np.ndarray:
    return np.ascontiguousarray(np.ma.filled(np.ma.asarray(values), 0)).astype(dtype, copy=False)
