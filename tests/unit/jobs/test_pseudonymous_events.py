"""`jobs.privacy.pseudonymous_events`: the copy the training and monitoring jobs read holds the same events with
pseudonymous ids (checked with `hmac` directly), is made once per content, and is skipped when privacy is off."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from freqcap.adapters.events_files import write_events
from freqcap.config import load_settings
from freqcap.jobs.privacy import pseudonymous_events

SECRET = "p" * 40


def expected(user_id: str) -> str:
    digest = hmac.new(SECRET.encode(), user_id.encode(), hashlib.sha256).digest()[:16]
    return "u.k1." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _world(root: Path) -> list[dict]:
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    rows = [
        {
            "event_id": f"e{i}",
            "event_type": "impression",
            "event_ts": t0 + timedelta(minutes=i),
            "user_id": f"u{i % 7}",
            "advertiser_id": "v1",
            "campaign_id": "c1",
            "ad_id": f"a{i % 3}",
            "format": "feed",
            "conversion_value": None,
        }
        for i in range(50)
    ]
    write_events(pa.Table.from_pylist(rows[:30]), root / "raw" / "events" / "date=2026-10-01" / "part-0.parquet")
    write_events(pa.Table.from_pylist(rows[30:]), root / "raw" / "events" / "date=2026-10-02" / "part-0.parquet")
    pq.write_table(
        pa.table({"user_id": [f"u{i}" for i in range(7)], "audience": ["cold"] * 7}), root / "raw" / "users.parquet"
    )
    pq.write_table(
        pa.table({"ad_id": ["a0"], "campaign_id": ["c1"], "advertiser_id": ["v1"]}), root / "raw" / "ads.parquet"
    )
    return rows


def _settings(root: Path, **env: str):
    return load_settings(environ={"FREQCAP__DATA_DIR": str(root / "data"), "FREQCAP__PRIVACY__KEYS__K1": SECRET, **env})


def test_the_copy_holds_the_same_events_with_pseudonyms(tmp_path):
    rows = _world(tmp_path)
    settings = _settings(tmp_path)
    events, users = pseudonymous_events(settings, tmp_path / "raw" / "events")
    got = sorted(pq.read_table(events).to_pylist(), key=lambda r: r["event_id"])
    want = sorted(({**r, "user_id": expected(r["user_id"])} for r in rows), key=lambda r: r["event_id"])
    assert [{k: r[k] for k in want[0]} for r in got] == want
    assert sorted(pq.read_table(users).column("user_id").to_pylist()) == sorted(expected(f"u{i}") for i in range(7))
    assert (Path(events).parent / "ads.parquet").is_file()
    assert Path(events).is_relative_to(tmp_path / "data" / "pseudonymized")
    # Made once: a second call reuses it; new content makes a new copy.
    mtime = os.path.getmtime(Path(events) / "events.parquet")
    assert pseudonymous_events(settings, tmp_path / "raw" / "events") == (events, users)
    assert os.path.getmtime(Path(events) / "events.parquet") == mtime
    write_events(pa.Table.from_pylist(rows[:1]), tmp_path / "raw" / "events" / "late.parquet")
    again, _ = pseudonymous_events(settings, tmp_path / "raw" / "events")
    assert again != events and pq.read_table(again).num_rows == len(rows) + 1
    # A copy passed back in is used as it is.
    assert pseudonymous_events(settings, again)[0] == again


def test_privacy_off_reads_the_raw_events(tmp_path):
    _world(tmp_path)
    settings = _settings(tmp_path, FREQCAP__PRIVACY__ENABLED="false")
    events, users = pseudonymous_events(settings, tmp_path / "raw" / "events")
    assert events == str(tmp_path / "raw" / "events")
    assert users == str((tmp_path / "raw" / "users.parquet").resolve())
    assert not (tmp_path / "data" / "pseudonymized").exists()
