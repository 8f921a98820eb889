"""The point-in-time training set: one row per impression, features as of just before it, labels after it.

How a build goes (`build_training_set`):

1. **Impressions, exposure and labels (DuckDB, one scan of the events).** Events up to the horizon `as_of` are
   read (deduplicated by event_id unless told otherwise). For every impression at time t, window functions over
   the same user's impressions give, per level L, the exact exposure index `n_L` = 1 + the number of
   impressions of the same entity to the same user with time in (t − lookback, t) — strictly before t, so
   n ≥ 1 and ties share an index — and `hours_since_last_L` (null when there is none in the lookback). Two
   ASOF joins find the first conversion and the first click of the same (user, ad) at or after t:
   `label_conversion` = 1 when that conversion is within the attribution window, `label_click` likewise;
   `label_attributed_conversion` = 1 when, in addition, no later impression of the same ad comes before that
   conversion, i.e. this very impression is the ad's last touch before it (the other label also counts
   conversions that a *later* impression of the streak produced); `conversion_us` is that conversion's time
   (null when `label_conversion` = 0), from which training can deconvolve the credit.
   Only impressions in [start, end) are kept, and `end + window ≤ as_of` is required so that every label is
   fully observed (no right-censored zeros).
2. **Features as of just before the impression (Feast).** The entity rows carry `event_timestamp` = t − 1 µs;
   Feast's duckdb offline store joins the latest snapshot of each view with event_timestamp ≤ that time (and
   within the view's ttl). A snapshot at time S counts events with time ≤ S < t, so nothing at or after the
   impression reaches a feature. Absent pairs mean zero (tables are sparse; tombstones zero pairs that went
   quiet), so counts are filled with 0 and a missing signal tier is `impression_only`. Before joining, every
   impression is checked to have a snapshot of every view within the ttl (else the build stops, naming the
   uncovered days: run the snapshot backfill).
3. **Context.** `format`, `hour_of_day` (UTC), `audience` (from users.parquet; static), `signal_tier` (from the
   user view, as of the snapshot).

The same join can run as one DuckDB ASOF JOIN directly over the snapshot files (`engine="duckdb"`): it is the
benchmark's baseline and the tests' independent audit (it can also return each view's snapshot time). On Spark
(`engine="spark"`, chosen by `features.engine: spark`) the join runs in `freqcap.adapters.spark.training_join`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import duckdb
import numpy as np

from freqcap.adapters.events_files import parquet_glob
from freqcap.adapters.feast.snapshots import list_snapshots
from freqcap.adapters.feast.store import open_store
from freqcap.adapters.spark.training_join import (  # pyspark itself is imported only when used
    spark_impressions_into,
    spark_join,
)
from freqcap.config import Settings, parse_duration
from freqcap.domain.training.columns import (
    CONVERSION_TIME_COLUMN,
    EXACT_COLUMNS,
    LABEL_COLUMNS,
    LEVEL_ORDER,
    STRING_FEATURES,
    TrainingSet,
    exposure_column,
    recency_column,
)
from freqcap.domain.training.config import ConversionModelConfig
from freqcap.errors import FreqcapError
from freqcap.layout import DataLayout, offline_root, users_path_for

log = logging.getLogger(__name__)

_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
TRAINING_FILE = "training_set.parquet"
META_FILE = "training_set.json"


class TrainingDataError(FreqcapError):
    """The training set cannot be built as asked (window, horizon, missing snapshots); the message says why."""


def feast_column(ref: str) -> str:
    """The column Feast returns for `view:feature` with full feature names."""
    view, _, feature = ref.partition(":")
    return f"{view}__{feature}"


def numeric_feature_refs(config: ConversionModelConfig) -> tuple[str, ...]:
    return tuple(r for r in config.data.feature_refs if r not in STRING_FEATURES)


def _us(ts: datetime) -> int:
    if ts.tzinfo is None:
        raise ValueError(f"{ts!r} must be timezone-aware (UTC)")
    return (ts - _EPOCH) // timedelta(microseconds=1)  # exact, no float rounding


def _from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(us))


def _sql_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ window resolution


def resolve_window(
    con: duckdb.DuckDBPyConnection,
    source: str,
    config: ConversionModelConfig,
    as_of: datetime | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[datetime, datetime, datetime]:
    """(start, end, horizon): impressions in [start, end), events observed up to the horizon `as_of`.

    Defaults: horizon = the newest event; end = horizon − the label horizon (every label complete);
    start = max(end − data.window, first event + data.history_warmup).
    """
    first_us, last_us = con.sql(f"SELECT epoch_us(min(event_ts)), epoch_us(max(event_ts)) FROM {source}").fetchall()[0]
    if first_us is None:
        raise TrainingDataError("no events to build a training set from")
    horizon = as_of.astimezone(UTC) if as_of is not None else _from_us(last_us)
    label_horizon = timedelta(seconds=config.label.horizon_seconds)
    latest_end = horizon - label_horizon
    end = end.astimezone(UTC) if end is not None else latest_end
    if end > latest_end:
        raise TrainingDataError(
            f"window end {end.isoformat()} leaves labels incomplete: impressions need {config.label.attribution_window} "
            f"of observed events after them, and events are observed up to {horizon.isoformat()} "
            f"(latest allowed end: {latest_end.isoformat()})"
        )
    if start is None:
        warm = _from_us(first_us) + parse_duration(config.data.history_warmup)
        start = max(end - parse_duration(config.data.window), warm)
    start = start.astimezone(UTC)
    if start >= end:
        raise TrainingDataError(
            f"empty training window [{start.isoformat()}, {end.isoformat()}): the events span "
            f"{_from_us(first_us).isoformat()} .. {horizon.isoformat()}, and labels need {config.label.attribution_window} after each impression"
        )
    return start, end, horizon


# ------------------------------------------------------------------------------ impressions, exposure, labels


def _events_source(events: str | Path) -> str:
    columns = "event_id, event_type, event_ts, user_id, advertiser_id, campaign_id, ad_id, format"
    return f"(SELECT {columns} FROM read_parquet({_sql_str(parquet_glob(events))}, hive_partitioning = false))"


def create_impressions(
    con: duckdb.DuckDBPyConnection,
    source: str,
    config: ConversionModelConfig,
    start: datetime,
    end: datetime,
    horizon: datetime,
    table: str = "imps",
    deduplicate: bool = True,
) -> int:
    """Temp table `table`: impressions in [start, end) with exact exposure indices, recency and labels.

    Reads only events in [start − lookback, horizon]; `deduplicate` keeps the earliest copy of each event_id
    among them."""
    start_us, end_us, horizon_us = _us(start), _us(end), _us(horizon)
    lookback_us = config.data.lookback_seconds * _US
    conv_us = config.label.attribution_seconds * _US
    click_us = config.label.click_seconds * _US
    lo = start_us - lookback_us
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _ev AS
        SELECT {"DISTINCT ON (event_id)" if deduplicate else ""}
               event_id, event_type, epoch_us(event_ts) AS ts_us, user_id, advertiser_id, campaign_id, ad_id, format
        FROM {source}
        WHERE event_ts >= make_timestamptz({lo}) AND event_ts <= make_timestamptz({horizon_us})
        {"ORDER BY event_id, event_ts" if deduplicate else ""}
        """
    )
    windows = []
    for level in LEVEL_ORDER:
        # RANGE over integer microseconds: rows with ts in [t - (lookback - 1µs), t - 1µs] = (t - lookback, t).
        frame = (
            f"(PARTITION BY user_id, {level}_id ORDER BY ts_us "
            f"RANGE BETWEEN {lookback_us - 1} PRECEDING AND 1 PRECEDING)"
        )
        windows.append(f"count(*) OVER {frame} + 1 AS {exposure_column(level)}")
        windows.append(f"max(ts_us) OVER {frame} AS _last_{level}")
    # The next impression of the same ad strictly after t: a conversion after it is not attributed to this one.
    windows.append(
        "min(ts_us) OVER (PARTITION BY user_id, ad_id ORDER BY ts_us "
        "RANGE BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS _next_imp_us"
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _imp AS
        SELECT * FROM (
            SELECT event_id, user_id, advertiser_id, campaign_id, ad_id, format, ts_us, {", ".join(windows)}
            FROM _ev WHERE event_type = 'impression'
        ) WHERE ts_us >= {start_us} AND ts_us < {end_us}
        """
    )
    recency = ", ".join(
        f"(i.ts_us - i._last_{lv}) / 3600e6 AS {recency_column(lv)}" for lv in LEVEL_ORDER
    )  # null when no earlier impression in the lookback
    con.execute(
        """
        CREATE OR REPLACE TEMP TABLE _lab AS
        SELECT i.*, c.ts_us AS _next_conv_us
        FROM _imp i ASOF LEFT JOIN (SELECT user_id, ad_id, ts_us FROM _ev WHERE event_type = 'conversion') c
          ON i.user_id = c.user_id AND i.ad_id = c.ad_id AND c.ts_us >= i.ts_us
        """
    )
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT i.event_id, i.user_id, i.advertiser_id, i.campaign_id, i.ad_id, i.format, i.ts_us,
               {", ".join(exposure_column(lv) + "::BIGINT AS " + exposure_column(lv) for lv in LEVEL_ORDER)},
               {recency},
               (i._next_conv_us IS NOT NULL AND i._next_conv_us < i.ts_us + {conv_us})::INTEGER AS label_conversion,
               (i._next_conv_us IS NOT NULL AND i._next_conv_us < i.ts_us + {conv_us}
                AND (i._next_imp_us IS NULL OR i._next_imp_us > i._next_conv_us))::INTEGER AS label_attributed_conversion,
               (k.ts_us IS NOT NULL AND k.ts_us < i.ts_us + {click_us})::INTEGER AS label_click,
               CASE WHEN i._next_conv_us < i.ts_us + {conv_us} THEN i._next_conv_us END AS {CONVERSION_TIME_COLUMN}
        FROM _lab i ASOF LEFT JOIN (SELECT user_id, ad_id, ts_us FROM _ev WHERE event_type = 'click') k
          ON i.user_id = k.user_id AND i.ad_id = k.ad_id AND k.ts_us >= i.ts_us
        """
    )
    for tmp in ("_ev", "_imp", "_lab"):
        con.execute(f"DROP TABLE IF EXISTS {tmp}")
    return con.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]


# ------------------------------------------------------------------------------------------- snapshot checks


def _views(refs: tuple[str, ...]) -> list[str]:
    return sorted({r.partition(":")[0] for r in refs})


def snapshot_coverage(
    con: duckdb.DuckDBPyConnection, repo_dir: Path, refs: tuple[str, ...], ttl: timedelta, table: str = "imps"
) -> dict[str, dict[str, Any]]:
    """Per view: how many impressions have no snapshot within `ttl` before them, and on which days."""
    ts = np.asarray(con.sql(f"SELECT ts_us - 1 AS f FROM {table}").fetchnumpy()["f"], dtype=np.int64)
    ttl_us = int(ttl.total_seconds() * _US)
    day_us = 86400 * _US
    out: dict[str, dict[str, Any]] = {}
    for view in _views(refs):
        snaps = np.array([_us(t) for t, _ in list_snapshots(offline_root(repo_dir), view)], dtype=np.int64)
        if len(snaps) == 0:
            missing = np.ones(len(ts), dtype=bool)
        else:
            idx = np.searchsorted(snaps, ts, side="right") - 1  # the latest snapshot <= t - 1us
            missing = (idx < 0) | (ts - snaps[np.maximum(idx, 0)] > ttl_us)
        days = [_from_us(int(d)).date().isoformat() for d in np.unique(ts[missing] // day_us * day_us)]
        out[view] = {"snapshots": len(snaps), "uncovered_rows": int(missing.sum()), "uncovered_days": days}
    return out


# ----------------------------------------------------------------------------------------------- feature joins


def feast_join(
    con: duckdb.DuckDBPyConnection,
    store: Any,
    refs: tuple[str, ...],
    table: str = "imps",
    out: str = "feats",
    chunk_rows: int = 1_000_000,
) -> None:
    """Table `out` (event_id + one column per ref) from Feast's `get_historical_features` at t − 1 µs.

    Entity rows go to Feast in time-ordered chunks of at most `chunk_rows`: Feast holds the entity frame in
    pandas and the joined result in memory (measured ~1.2 GB of peak RSS per million rows with 23 features), so
    chunking bounds memory; each chunk re-reads the snapshot files, a few seconds per chunk.
    """
    con.execute(
        f"""
        CREATE OR REPLACE TEMP TABLE _entities AS
        SELECT event_id, user_id, advertiser_id, campaign_id, ad_id, make_timestamptz(ts_us - 1) AS event_timestamp,
               (row_number() OVER (ORDER BY ts_us, event_id) - 1) // {int(chunk_rows)} AS _chunk
        FROM {table}
        """
    )
    chunks = con.execute("SELECT coalesce(max(_chunk), -1) + 1 FROM _entities").fetchall()[0][0]
    keep = ["event_id", *(feast_column(r) for r in refs)]
    for k in range(chunks):
        entity_df = con.sql(f"SELECT * EXCLUDE (_chunk) FROM _entities WHERE _chunk = {k}").df()
        job = store.get_historical_features(entity_df=entity_df, features=list(refs), full_feature_names=True)
        result = job.to_arrow().select(keep)
        del entity_df, job
        con.register("_feast_result", result)
        if k == 0:
            con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT * FROM _feast_result")
        else:
            con.execute(f"INSERT INTO {out} SELECT * FROM _feast_result")
        con.unregister("_feast_result")
        del result
        if chunks > 1:
            log.info("feast join: chunk %d/%d done", k + 1, chunks)
    con.execute("DROP TABLE _entities")


def asof_join(
    con: duckdb.DuckDBPyConnection,
    repo_dir: Path,
    refs: tuple[str, ...],
    ttl: timedelta,
    table: str = "imps",
    out: str = "feats",
    snapshot_ts: bool = False,
) -> None:
    """The same point-in-time join as Feast's, as DuckDB ASOF JOINs straight over the snapshot files.

    For each view: the latest snapshot row of the entity key with event_timestamp ≤ t − 1 µs, dropped when
    older than `ttl` (Feast's rule). `snapshot_ts` adds `<view>__snapshot_ts`, the joined row's event_timestamp.
    """
    ttl_us = int(ttl.total_seconds() * _US)
    selects, joins = ["i.event_id"], []
    for k, view in enumerate(_views(refs)):
        keys = ["user_id"] if view == "user" else ["user_id", f"{view.removeprefix('user_')}_id"]
        feats = [r.partition(":")[2] for r in refs if r.partition(":")[0] == view]
        glob = str(offline_root(repo_dir) / view / "*.parquet")
        cols = ", ".join([*keys, *(_q(f) for f in feats), "epoch_us(event_timestamp) AS _snap_us"])
        alias = f"f{k}"
        on = " AND ".join(f"i.{c} = {alias}.{c}" for c in keys)
        joins.append(
            f"ASOF LEFT JOIN (SELECT {cols} FROM read_parquet({_sql_str(glob)})) {alias} "
            f"ON {on} AND {alias}._snap_us <= i.ts_us - 1"
        )
        fresh = f"({alias}._snap_us >= i.ts_us - 1 - {ttl_us})"
        for f in feats:
            selects.append(f"CASE WHEN {fresh} THEN {alias}.{_q(f)} END AS {_q(f'{view}__{f}')}")
        if snapshot_ts:
            selects.append(
                f"CASE WHEN {fresh} THEN make_timestamptz({alias}._snap_us) END AS {_q(f'{view}__snapshot_ts')}"
            )
    con.execute(f"CREATE OR REPLACE TEMP TABLE {out} AS SELECT {', '.join(selects)} FROM {table} i {' '.join(joins)}")


# --------------------------------------------------------------------------------------------------- assembly


def _final_select(config: ConversionModelConfig, users_path: Path | None, extra: tuple[str, ...]) -> str:
    cols = [
        "i.event_id",
        "i.user_id",
        "i.advertiser_id",
        "i.campaign_id",
        "i.ad_id",
        "make_timestamptz(i.ts_us) AS impression_ts",
        "make_timestamptz(i.ts_us - 1) AS feature_ts",
        "i.format",
        "((i.ts_us // 3600000000) % 24)::INTEGER AS hour_of_day",
        ("coalesce(u.audience, 'unknown')" if users_path else "'unknown'") + " AS audience",
    ]
    for ref, missing in STRING_FEATURES.items():
        if ref in config.data.feature_refs:
            cols.append(f"coalesce(f.{_q(feast_column(ref))}, {_sql_str(missing)}) AS {ref.partition(':')[2]}")
    cols += [f"i.{c}" for c in EXACT_COLUMNS]
    for ref in numeric_feature_refs(config):
        name = feast_column(ref)
        kind = "DOUBLE" if ref.endswith("imp_decayed") else "BIGINT"
        zero = "0.0" if kind == "DOUBLE" else "0"
        cols.append(f"coalesce(f.{_q(name)}, {zero})::{kind} AS {_q(name)}")
    cols += [f"f.{_q(c)}" for c in extra]
    cols += [f"i.{c}" for c in (*LABEL_COLUMNS, CONVERSION_TIME_COLUMN)]
    # One audience per user even if users.parquet repeats a user (a repeat must not duplicate impressions).
    users = (
        f"(SELECT user_id, min(audience) AS audience FROM read_parquet({_sql_str(str(users_path))}) GROUP BY user_id)"
    )
    join_users = f"LEFT JOIN {users} u ON u.user_id = i.user_id" if users_path else ""
    return f"""
        SELECT {", ".join(cols)}
        FROM imps i LEFT JOIN feats f ON f.event_id = i.event_id {join_users}
        ORDER BY i.ts_us, i.event_id
    """


def build_training_set(
    events: str | Path,
    settings: Settings,
    config: ConversionModelConfig,
    *,
    out_path: str | Path,
    as_of: datetime | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    users: str | Path | None = None,
    repo_dir: Path | None = None,
    store: Any = None,
    engine: Literal["feast", "duckdb", "spark"] = "feast",
    deduplicate: bool | None = None,
    snapshot_ts: bool = False,
) -> TrainingSet:
    """Build the point-in-time training set (see the module docstring) and write it to `out_path`.

    `engine="feast"` joins features with Feast's `get_historical_features` (the production path);
    `engine="duckdb"` with ASOF JOINs over the same snapshot files (baseline and audit; `snapshot_ts=True`
    adds each view's joined snapshot time as `<view>__snapshot_ts`); `engine="spark"` the same join on Spark
    (`features.spark`), for snapshots too large for one machine.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    repo = (repo_dir or DataLayout.of(settings).feast_repo).resolve()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    refs = config.data.feature_refs
    ttl = parse_duration(settings.feast.snapshot_ttl)
    dedup = config.data.deduplicate if deduplicate is None else deduplicate
    users_path = users_path_for(events, users) if Path(events).is_dir() else (Path(users) if users else None)
    notes: list[str] = [] if users_path else ["no users.parquet found: audience is 'unknown' for every row"]
    con = duckdb.connect()
    try:
        con.execute(f"SET threads = {settings.features.threads}")
        con.execute(f"SET memory_limit = {_sql_str(settings.features.memory_limit)}")
        con.execute("SET preserve_insertion_order = false")
        source = _events_source(events)
        start, end, horizon = resolve_window(con, source, config, as_of, start, end)
        if engine == "spark":
            rows = spark_impressions_into(
                con, settings.features.spark, events, config, (start, end, horizon), out_path.parent, dedup
            )
        else:
            rows = create_impressions(con, source, config, start, end, horizon, deduplicate=dedup)
        timings["impressions_and_labels"] = time.perf_counter() - t0
        if rows == 0:
            raise TrainingDataError(f"no impressions in [{start.isoformat()}, {end.isoformat()})")

        coverage = snapshot_coverage(con, repo, refs, ttl)
        uncovered = {v: c for v, c in coverage.items() if c["uncovered_rows"]}
        if uncovered:
            detail = "; ".join(
                f"{v}: {c['uncovered_rows']} impressions on {', '.join(c['uncovered_days'][:5])}"
                + (" ..." if len(c["uncovered_days"]) > 5 else "")
                for v, c in uncovered.items()
            )
            message = (
                f"impressions without a feature snapshot within {settings.feast.snapshot_ttl} before them ({detail}); "
                "publish the missing days first (freqcap.jobs.backfill.publish_daily_snapshots)"
            )
            if config.data.require_snapshot_coverage:
                raise TrainingDataError(message)
            notes.append(message)

        t = time.perf_counter()
        if engine == "feast":
            if snapshot_ts:
                raise ValueError("snapshot_ts is only available with engine='duckdb' or 'spark'")
            if store is None:
                store = open_store(settings, repo)
                timings["open_store"] = time.perf_counter() - t
                t = time.perf_counter()
            feast_join(con, store, refs, chunk_rows=config.data.feast_chunk_rows)
        elif engine == "duckdb":
            asof_join(con, repo, refs, ttl, snapshot_ts=snapshot_ts)
        elif engine == "spark":
            spark_join(con, settings.features.spark, repo, refs, ttl, out_path.parent, snapshot_ts=snapshot_ts)
        else:
            raise ValueError(f"unknown engine {engine!r}")
        timings["feature_join"] = time.perf_counter() - t

        t = time.perf_counter()
        extra = tuple(f"{v}__snapshot_ts" for v in _views(refs)) if snapshot_ts else ()
        tmp = out_path.with_name(f".{out_path.name}.tmp")
        con.execute(f"COPY ({_final_select(config, users_path, extra)}) TO {_sql_str(str(tmp))} (FORMAT parquet)")
        tmp.replace(out_path)
        label_rate, click_rate = con.sql(
            f"SELECT avg(label_conversion), avg(label_click) FROM read_parquet({_sql_str(str(out_path))})"
        ).fetchall()[0]
        timings["write"] = time.perf_counter() - t
    finally:
        con.close()
    digest = file_sha256(out_path)
    timings["total"] = time.perf_counter() - t0
    result = TrainingSet(
        path=out_path,
        rows=int(rows),
        start=start,
        end=end,
        as_of=horizon,
        engine=engine,
        label_rate=float(label_rate),
        click_rate=float(click_rate),
        feature_columns=tuple(feast_column(r) for r in numeric_feature_refs(config)),
        sha256=digest,
        seconds={k: round(v, 3) for k, v in timings.items()},
        notes=tuple(notes),
    )
    out_path.with_name(META_FILE if out_path.name == TRAINING_FILE else out_path.stem + ".json").write_text(
        json.dumps({**result.to_dict(), "snapshot_coverage": coverage}, indent=2)
    )
    log.info(
        "training set: %d rows in [%s, %s), label rate %.4f, %.1fs (%s)",
        rows,
        start.isoformat(),
        end.isoformat(),
        label_rate,
        timings["total"],
        timings,
    )
    return result
