"""Retention of the file stores, the Evidently workspace and the stream's dead letters (real Redis).

Dated fixtures are laid out with `DataLayout` paths; every cut-off is computed here from the documented default
horizons (not read from the code under test), and what must go or stay is decided per fixture from its own date.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from freqcap.adapters.events_files import write_events
from freqcap.config import load_settings
from freqcap.domain.events import EVENT_SCHEMA
from freqcap.jobs.retention import prune
from freqcap.layout import DataLayout, stamp

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=UTC)
DAY = timedelta(days=1)
# The documented defaults (defaults.yaml, docs/operations/retention.md), restated independently.
HORIZON = {
    "raw_events": 90 * DAY,
    "clean_events": 7 * DAY,
    "quarantine": 30 * DAY,
    "feature_runs": 14 * DAY,
    "snapshots": 60 * DAY,
    "training_sets": 90 * DAY,
    "decision_log": 30 * DAY,
    "evidently_snapshots": 90 * DAY,
    "monitoring_runs": 7 * DAY,
    "dead_letters": 14 * DAY,
}
CUT = {store: NOW - span for store, span in HORIZON.items()}
FILE_GROUPS = ["events", "features", "training", "monitoring", "stream"]


def _settings(tmp_path: Path, **env: str):
    return load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path / "data"), **env})


def _events(times: list[datetime]) -> pa.Table:
    n = len(times)
    return pa.table(
        {
            "event_id": [uuid.uuid4().hex for _ in range(n)],
            "event_type": ["impression"] * n,
            "event_ts": pa.array(times, pa.timestamp("us", tz="UTC")),
            "user_id": ["u1"] * n,
            "advertiser_id": ["a1"] * n,
            "campaign_id": ["c1"] * n,
            "ad_id": ["d1"] * n,
            "format": ["feed"] * n,
            "conversion_value": pa.array([None] * n, pa.float64()),
        },
        schema=EVENT_SCHEMA,
    )


def _touch(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


class World:
    """Dated fixtures in every file store; `expect_gone` holds the paths that must go, decided per fixture."""

    def __init__(self, settings):
        self.layout = DataLayout.of(settings)
        self.gone: set[Path] = set()
        self.kept: set[Path] = set()
        self.expected: dict[str, int] = {}

    def mark(self, path: Path, goes: bool) -> None:
        (self.gone if goes else self.kept).add(path)

    def build(self) -> World:
        self._raw_events()
        self._features_runs()
        self._snapshots()
        self._training()
        self._monitoring()
        self._dead_letter_file()
        return self

    def _raw_events(self) -> None:
        # (first, last) event time per file; a file goes when its newest event is before the cut-off.
        spans = [(100, 99), (95, 91), (95, 85), (90.1, 90.05), (89.9, 89.8), (3, 0.5)]
        for n, (first, last) in enumerate(spans):
            times = [NOW - first * DAY, NOW - last * DAY]
            path = self.layout.events_dir / f"date={times[0].date()}" / f"part-{n}.parquet"
            write_events(_events(times), path)
            self.mark(path, max(times) < CUT["raw_events"])
        self.expected["raw_events"] = sum(max(NOW - a * DAY, NOW - b * DAY) < CUT["raw_events"] for a, b in spans)

    def _features_runs(self) -> None:
        counts = {"clean_events": 0, "quarantine": 0, "feature_runs": 0}
        for age in (3, 10, 20, 40):
            as_of = NOW - age * DAY
            run = self.layout.features_run(as_of)
            clean = _touch(run.validation_dir / "clean" / "events.parquet")
            quarantine = _touch(run.validation_dir / "quarantine.parquet")
            report = _touch(run.validation_dir / "validation_report.json", "{}")
            tables = _touch(run.features_dir / "user_ad.parquet")
            gate = _touch(run.features_report, "{}")
            self.mark(clean, as_of < CUT["clean_events"])
            self.mark(quarantine, as_of < CUT["quarantine"])
            self.mark(report, as_of < CUT["quarantine"])
            self.mark(tables, as_of < CUT["feature_runs"])
            self.mark(gate, as_of < CUT["feature_runs"])
            counts["clean_events"] += as_of < CUT["clean_events"]
            counts["quarantine"] += as_of < CUT["quarantine"]
            counts["feature_runs"] += as_of < CUT["feature_runs"]
        self.expected.update(counts)

    def _snapshots(self) -> None:
        ages = {"user_ad": [70, 65, 50, 1], "user": [100]}  # `user` has one snapshot, its newest: always kept
        expected = 0
        for table, table_ages in ages.items():
            newest = min(table_ages)
            for age in table_ages:
                as_of = NOW - age * DAY
                path = _touch(self.layout.offline_root / table / f"snapshot_{stamp(as_of)}.parquet")
                goes = as_of < CUT["snapshots"] and age != newest
                self.mark(path, goes)
                expected += goes
        self.expected["snapshots"] = expected

    def _training(self) -> None:
        training = curves = 0
        for age in (100, 91, 89, 5):
            as_of = NOW - age * DAY
            ts = _touch(self.layout.training_dir("conversion", as_of) / "training.parquet")
            cv = _touch(self.layout.curves_dir(as_of) / "curves.parquet")
            self.mark(ts, as_of < CUT["training_sets"])
            self.mark(cv, as_of < CUT["training_sets"])
            training += as_of < CUT["training_sets"]
            curves += as_of < CUT["training_sets"]
        self.expected.update({"training_sets": training, "curves": curves, "mlflow_runs": 0})

    def _monitoring(self) -> None:
        runs = 0
        for age in (8, 7.5, 6.9, 0.1):
            as_of = NOW - age * DAY
            path = _touch(self.layout.monitoring_run(as_of).metrics, "{}")
            self.mark(path, as_of < CUT["monitoring_runs"])
            runs += as_of < CUT["monitoring_runs"]
        days = 0
        for age in (40, 31, 30, 29, 1):
            day = (NOW - age * DAY).date()
            path = _touch(self.layout.decision_log_dir / f"date={day}" / "part-0.jsonl", "{}\n")
            # A day goes when it ended at or before the cut-off (none of its records are inside the horizon).
            day_end = datetime(day.year, day.month, day.day, tzinfo=UTC) + DAY
            self.mark(path, day_end <= CUT["decision_log"])
            days += day_end <= CUT["decision_log"]
        self.expected.update({"monitoring_runs": runs, "decision_log": days, "evidently_snapshots": 0})

    def _dead_letter_file(self) -> None:
        lines, expected = [], 0
        for age in (20, 15, 13, 1, None):
            record = {"id": f"{len(lines)}-0", "reason": "bad_ts", "fields": {"event_id": "e"}}
            if age is not None:
                record["dead_at"] = (NOW - age * DAY).isoformat()
                expected += NOW - age * DAY < CUT["dead_letters"]
            lines.append(json.dumps(record))
        _touch(self.layout.stream_dead_letters, "\n".join(lines) + "\n")
        self.expected["dead_letters"] = expected
        self.dead_letter_lines = lines


def test_every_file_store_is_pruned_to_its_horizon_and_dry_run_removes_nothing(tmp_path):
    settings = _settings(tmp_path)
    world = World(settings).build()
    root = world.layout.root
    before = _tree(root)

    dry = prune(settings, NOW, dry_run=True, groups=FILE_GROUPS)
    assert _tree(root) == before, "a dry run removed something"
    assert dry == world.expected

    counts = prune(settings, NOW, groups=FILE_GROUPS)
    assert counts == world.expected == dry
    assert all(not p.exists() for p in world.gone), sorted(str(p) for p in world.gone if p.exists())
    assert all(p.exists() for p in world.kept), sorted(str(p) for p in world.kept if not p.exists())
    # Lines without a dead_at are kept (not ours to date); the dated ones by their age.
    remaining = world.layout.stream_dead_letters.read_text().splitlines()
    assert remaining == [
        line
        for line in world.dead_letter_lines
        if "dead_at" not in json.loads(line)
        or datetime.fromisoformat(json.loads(line)["dead_at"]) >= CUT["dead_letters"]
    ]
    # A features run with nothing left is gone as a directory; one still holding its quarantine stays.
    assert not world.layout.features_run(NOW - 40 * DAY).root.exists()
    assert sorted(p.name for p in world.layout.features_run(NOW - 20 * DAY).root.rglob("*")) == [
        "quarantine.parquet",
        "validation",
        "validation_report.json",
    ]

    again = prune(settings, NOW, groups=FILE_GROUPS)  # idempotent: nothing left to remove
    assert set(again.values()) == {0}


def test_a_horizon_shorter_than_its_readers_need_is_rejected_naming_the_field(tmp_path):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=r"retention\.raw_events"):
        _settings(tmp_path, FREQCAP__RETENTION__RAW_EVENTS="20d")
    with pytest.raises(ValidationError, match=r"retention\.decision_log"):
        _settings(tmp_path, FREQCAP__RETENTION__DECISION_LOG="12h")


def test_training_needs_are_checked_against_the_model_config(tmp_path):
    """The default model trains on 28d of impressions with 28d of history and a 7d attribution window: 63d of
    raw events. 40d passes the settings' own check (28d window + 2d lateness) but not the training's."""
    from freqcap.jobs.retention import RetentionConfigError

    settings = _settings(tmp_path, FREQCAP__RETENTION__RAW_EVENTS="40d")
    events = DataLayout.of(settings).events_dir / "part-0.parquet"
    write_events(_events([NOW - 50 * DAY]), events)  # inside what training needs, outside the 40d asked for
    for group in ("events", "training"):
        with pytest.raises(RetentionConfigError, match=r"retention\.raw_events"):
            prune(settings, NOW, groups=[group])
    assert events.exists()


def _snapshot(ts: datetime):
    from evidently import Dataset, Report
    from evidently.metrics import RowCount

    frame = pd.DataFrame({"x": [1, 2, 3]})
    return Report([RowCount()]).run(Dataset.from_pandas(frame), None, timestamp=ts.replace(tzinfo=None))


def test_evidently_snapshots_older_than_the_horizon_are_deleted_through_the_workspace(tmp_path):
    from evidently.ui.workspace import Workspace

    settings = _settings(tmp_path)
    workspace = DataLayout.of(settings).workspace_dir
    workspace.mkdir(parents=True)
    ws = Workspace(str(workspace))
    project = ws.create_project("freqcap")
    ages = [120, 91, 89, 1]
    ids = {age: str(ws.add_run(project.id, _snapshot(NOW - age * DAY)).id) for age in ages}
    old = {ids[a] for a in ages if NOW - a * DAY < CUT["evidently_snapshots"]}

    dry = prune(settings, NOW, dry_run=True, groups=["monitoring"])
    assert dry["evidently_snapshots"] == len(old) == 2
    assert {str(s) for s in ws.list_runs(project.id)} == set(ids.values())

    counts = prune(settings, NOW, groups=["monitoring"])
    assert counts == dry
    assert {str(s) for s in Workspace(str(workspace)).list_runs(project.id)} == set(ids.values()) - old


@pytest.mark.redis
def test_redis_dead_letters_older_than_the_horizon_are_trimmed(tmp_path, redis_connection_string):
    import redis

    host, port = redis_connection_string.split(":")
    client = redis.Redis(host=host, port=int(port))
    key = f"test-retention-{uuid.uuid4().hex[:8]}:dead"
    partitions = 2
    keys = [f"{key}:{{p{p}}}" for p in range(partitions)]  # dead_letter_name's layout, restated
    settings = _settings(
        tmp_path,
        FREQCAP__STREAM__ENABLED="true",
        FREQCAP__STREAM__REDIS_URL=redis_connection_string,
        FREQCAP__STREAM__DEAD_LETTER_KEY=key,
        FREQCAP__STREAM__PARTITIONS=str(partitions),
    )
    ages = [30, 14.5, 13.9, 0.5]
    ids = []
    try:
        for p, k in enumerate(keys):
            for age in ages:
                ms = int((NOW - age * DAY).timestamp() * 1000) + p
                client.xadd(k, {"_reason": "late"}, id=f"{ms}-0")
                ids.append((k, f"{ms}-0", NOW - age * DAY < CUT["dead_letters"]))
        expected = sum(old for _, _, old in ids)

        dry = prune(settings, NOW, dry_run=True, groups=["stream"])
        assert dry == {"dead_letters": expected} == {"dead_letters": 4}
        assert sum(client.xlen(k) for k in keys) == len(ids)

        assert prune(settings, NOW, groups=["stream"]) == dry
        for k in keys:
            left = {i.decode() for i, _ in client.xrange(k)}
            assert left == {i for kk, i, old in ids if kk == k and not old}
    finally:
        client.delete(*keys)
        client.close()


def test_the_replay_transport_dates_each_dead_letter(tmp_path):
    from freqcap.adapters.stream.transport import DirectoryReplayTransport

    events = tmp_path / "events"
    write_events(_events([NOW]), events / "part-0.parquet")
    path = tmp_path / "dead.jsonl"
    transport = DirectoryReplayTransport(events, path)
    [message] = transport.read(10, 0)
    before = datetime.now(UTC)
    transport.dead_letter([(message, "late")])
    after = datetime.now(UTC)
    record = json.loads(path.read_text())
    assert before <= datetime.fromisoformat(record["dead_at"]) <= after
