"""Write a simulated world to a directory: events (date partitions), users, ads, truth, ground_truth.json."""

from __future__ import annotations

import json
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.events_files import write_ads, write_events
from freqcap.config import SimulationConfig
from freqcap.domain.simulate.model import DAY_US, simulate_world
from freqcap.domain.simulate.params import ModelParams
from freqcap.domain.simulate.tables import (
    CLICK,
    CONVERSION,
    IMPRESSION,
    ads_table,
    dictionaries,
    event_layout,
    events_table,
    truth_impressions_table,
    truth_users_table,
    users_table,
)
from freqcap.domain.simulate.truth import ground_truth

EVENTS_DIR = "events"
USERS_FILE = "users.parquet"
ADS_FILE = "ads.parquet"
GROUND_TRUTH_FILE = "ground_truth.json"
TRUTH_DIR = "truth"
TRUTH_IMPRESSIONS_FILE = "impressions.parquet"
TRUTH_USERS_FILE = "users.parquet"


@dataclass(frozen=True)
class SimulationSummary:
    """What `simulate_to_dir` wrote, and how long it took."""

    out_dir: Path
    events_dir: Path
    users_path: Path
    ads_path: Path
    ground_truth_path: Path
    truth_impressions_path: Path
    truth_users_path: Path
    partitions: tuple[str, ...]  # dates, YYYY-MM-DD
    users: int
    days: int
    seed: int
    advertisers: int
    campaigns: int
    ads: int
    impressions: int
    clicks: int
    conversions: int
    conversions_truncated: int
    events: int
    simulate_seconds: float  # sampling the world (model)
    write_seconds: float  # building tables and writing files
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  # model stages, then tables/writing

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
        out["partitions"] = list(self.partitions)
        out["events_per_second"] = self.events_per_second
        return out


def _write_parquet(
    table: pa.Table, path: Path, dictionary: list[str] | None = None, uncompressed: tuple[str, ...] = ()
) -> Path:
    """Write one Parquet file; `dictionary` limits dictionary encoding to those (low-cardinality) columns and
    `uncompressed` columns (e.g. random floats, which do not compress) skip compression."""
    path.parent.mkdir(parents=True, exist_ok=True)
    compression = {name: ("none" if name in uncompressed else "snappy") for name in table.column_names}
    pq.write_table(table, path, use_dictionary=True if dictionary is None else dictionary, compression=compression)
    return path


def _clear_stale_partitions(events_dir: Path) -> None:
    """Remove `date=*` partitions of an earlier run (only the simulator's own layout is touched)."""
    if events_dir.is_dir():
        for part in events_dir.glob("date=*"):
            if part.is_dir():
                shutil.rmtree(part)


def simulate_to_dir(
    out_dir: Path, config: SimulationConfig, params: ModelParams | None = None, threads: int = 2
) -> SimulationSummary:
    """Simulate a world from `config` (and behavioural `params`) and write it under `out_dir`.

    Layout: `events/date=YYYY-MM-DD/part-0.parquet` (EVENT_SCHEMA), `users.parquet`, `ads.parquet`,
    `ground_truth.json`, `truth/impressions.parquet`, `truth/users.parquet`. Same inputs, byte-identical
    files.
    """
    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    world = simulate_world(config, params)
    t1 = time.perf_counter()

    d = dictionaries(world)
    layout = event_layout(world)
    n_events = layout.n_rows
    n_by_type = np.bincount(layout.etype, minlength=3)
    events_dir = out_dir / EVENTS_DIR
    _clear_stale_partitions(events_dir)
    events_dir.mkdir(parents=True, exist_ok=True)
    events = events_table(world, layout, d, threads=threads)
    t_events = time.perf_counter()
    day = (layout.ts - layout.day0_us) // DAY_US
    first_day = datetime.fromtimestamp(layout.day0_us / 1e6, tz=UTC).date()
    n_days = int(day[-1]) + 1 if len(day) else 0
    bounds = np.searchsorted(day, np.arange(n_days + 1), side="left")
    del day
    jobs: list[tuple[pa.Table, Path]] = []
    partitions: list[str] = []
    for i in range(n_days):
        lo, hi = int(bounds[i]), int(bounds[i + 1])
        if hi > lo:
            date = (first_day + timedelta(days=i)).isoformat()
            partitions.append(date)
            jobs.append((events.slice(lo, hi - lo), events_dir / f"date={date}" / "part-0.parquet"))
    users_path = out_dir / USERS_FILE
    ads_path = out_dir / ADS_FILE
    truth_imp_path = out_dir / TRUTH_DIR / TRUTH_IMPRESSIONS_FILE
    truth_users_path = out_dir / TRUTH_DIR / TRUTH_USERS_FILE
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        writes = [pool.submit(write_events, tbl, path) for tbl, path in jobs]
        writes.append(pool.submit(_write_parquet, users_table(world, d), users_path))
        writes.append(pool.submit(write_ads, ads_table(world, d), ads_path))
        writes.append(pool.submit(_write_parquet, truth_users_table(world, d), truth_users_path, ["audience"]))
        truth_imps = truth_impressions_table(world, layout, d)  # built while the events are being written
        floats = tuple(f.name for f in truth_imps.schema if pa.types.is_floating(f.type))
        writes.append(pool.submit(_write_parquet, truth_imps, truth_imp_path, ["user_id"], floats))
        for future in writes:
            future.result()
    del events, jobs, truth_imps

    gt = ground_truth(world, n_events=n_events)
    gt_path = out_dir / GROUND_TRUTH_FILE
    gt_path.write_text(json.dumps(gt, indent=2, sort_keys=True) + "\n")
    t2 = time.perf_counter()
    counts = gt["counts"]
    return SimulationSummary(
        out_dir=out_dir,
        events_dir=events_dir,
        users_path=users_path,
        ads_path=ads_path,
        ground_truth_path=gt_path,
        truth_impressions_path=truth_imp_path,
        truth_users_path=truth_users_path,
        partitions=tuple(partitions),
        users=config.users,
        days=config.days,
        seed=config.seed,
        advertisers=counts["advertisers"],
        campaigns=counts["campaigns"],
        ads=counts["ads"],
        impressions=int(n_by_type[IMPRESSION]),
        clicks=int(n_by_type[CLICK]),
        conversions=int(n_by_type[CONVERSION]),
        conversions_truncated=counts["conversions_truncated"],
        events=n_events,
        simulate_seconds=t1 - t0,
        write_seconds=t2 - t1,
        seconds=t2 - t0,
        stage_seconds={**world.timings, "events_table": t_events - t1, "write": t2 - t_events},
    )


def load_ground_truth(out_dir_or_file: str | Path) -> dict[str, Any]:
    """Parse `ground_truth.json` (given the simulation directory or the file itself)."""
    path = Path(out_dir_or_file)
    if path.is_dir():
        path = path / GROUND_TRUTH_FILE
    return json.loads(path.read_text())
