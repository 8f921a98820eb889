"""The decision-log gate (`resources/gx/decision_log.json`) on a decision log written by the real serving app.

A small world's features are materialized into Feast (SQLite); the decision API serves every user with a policy
that binds at all levels (caps, hard caps, min_gap, stop-after-conversion) and, from a second app with no policy
yet, fails open. The log it writes passes. Copies of it with a hit logged below the cap, a fail-open row that
penalizes, an hour that disagrees with the timestamp and a user id field stop the gate naming those rules; the
offending rows are counted here with pandas.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from freqcap.adapters.decision_log import DecisionLog
from freqcap.adapters.events_files import write_events
from freqcap.adapters.feast.store import open_store
from freqcap.adapters.gx.decision_log import DecisionLogGateError, read_log_rows, validate_decision_log
from freqcap.adapters.gx.errors import DataValidationError
from freqcap.api.app import create_app
from tests.integration.test_feast_online import T1, _run_snapshot, _settings, random_events
from tests.integration.test_serving import TOKEN, body, write_policy

pytestmark = pytest.mark.slow
USERS = [f"u{i}" for i in range(15)] + ["nobody"]
NOW = T1 + timedelta(hours=1)


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("declog-gate")
    settings = _settings(tmp, "sqlite")
    events_dir = tmp / "events"
    old = random_events(1, 250, T1 - timedelta(days=12), T1 - timedelta(days=8, seconds=1))
    recent = random_events(2, 400, T1 - timedelta(days=1), T1 - timedelta(minutes=1), users=range(7))
    for i, part in enumerate([old, recent]):
        write_events(part, events_dir / f"part-{i}.parquet")
    repo = tmp / "feast"
    _run_snapshot(settings, tmp, events_dir, T1, open_store(settings, repo), repo)
    directory = tmp / "decisions"
    for policy in (write_policy(tmp), None):  # decisions, then fail-open answers of a service with no policy yet
        log = DecisionLog(directory, sample_rate=1.0, flush_seconds=0.05)
        app = create_app(
            settings,
            policy_path=policy,
            repo_dir=repo,
            admin_token=TOKEN,
            budget_ms=5000,
            admission_ms=1000,
            decision_log=log,
        )
        with TestClient(app) as client:
            for user in USERS if policy else USERS[:2]:
                assert client.post("/v1/decide", json=body(user)).status_code == 200
    return settings, directory


def _write_log(frame: pd.DataFrame, directory: Path) -> Path:
    """`frame` back into the log's layout (date partitions of JSON lines), as serving writes it."""
    for date, part in frame.groupby("date"):
        out = directory / f"date={date}" / "part-0.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        records = json.loads(part.to_json(orient="records", date_format="iso"))
        out.write_text("".join(json.dumps(r) + "\n" for r in records))
    return directory


def test_the_real_log_passes(log_dir):
    settings, directory = log_dir
    frame = read_log_rows(directory)
    kinds = set(frame["binding_kind"].dropna())
    assert "cap" in kinds and len(kinds) >= 2 and frame["hit"].any() and frame["degraded"].any()
    report = validate_decision_log(directory, settings, now=NOW, docs=False)
    assert report.success and report.rows == {"decision_log": len(frame)}
    assert not [o.rule for o in report.outcomes if o.success is None]  # every rule ran


def test_a_corrupted_log_stops_the_gate_naming_each_rule(log_dir, tmp_path):
    settings, directory = log_dir
    frame = read_log_rows(directory)
    under = frame.index[(frame["binding_kind"] == "cap") & ~frame["hit"] & (frame["count"] < frame["cap"])]
    degraded = frame.index[frame["fail_open"]]
    frame.loc[under[0], "hit"] = True  # a hit logged while count < cap
    frame.loc[degraded[0], "penalty"] = 0.5  # a fail-open answer that penalized (and it has no binding)
    frame.loc[under[1], "hour"] = (frame.loc[under[1], "hour"] + 5) % 24  # hour disagrees with ts
    frame["user_id"] = "u1"  # a user id leaks into the log
    expected = {
        "hit_means_cap_reached": int(
            ((frame["binding_kind"] == "cap") & frame["hit"] & (frame["count"] < frame["cap"])).sum()
        ),
        "fail_open_no_penalty": int((frame["fail_open"] & (frame["penalty"] != 1.0)).sum()),
        "no_binding_no_penalty": int((frame["binding_kind"].isna() & (frame["penalty"] != 1.0)).sum()),
        "hour_matches_ts": int((frame["hour"] != pd.to_datetime(frame["ts"], utc=True).dt.hour).sum()),
    }
    assert set(expected.values()) == {1}, expected
    with pytest.raises(DecisionLogGateError) as caught:
        validate_decision_log(_write_log(frame, tmp_path / "bad"), settings, now=NOW, docs=False)
    exc = caught.value
    assert isinstance(exc, DataValidationError)
    failed = {o.rule: o for o in exc.report.failed}
    assert set(failed) == {*expected, "columns_match"}
    for rule, n in expected.items():
        assert failed[rule].unexpected_count == n and rule in str(exc)
    assert failed["columns_match"].observed == {"unexpected": ["user_id"]}
    assert 'columns_match (expect_table_columns_to_match_set): observed {"unexpected": ["user_id"]}' in str(exc)
    row = frame.loc[under[0]]
    assert f"e.g. [{float(row['count'])}, {float(row['cap'])}]" in str(exc)  # the offending (count, cap)


def test_a_decision_on_batch_counts_alone_is_degraded_but_may_penalize(log_dir, tmp_path):
    """A stale stream degrades an answer (`stream_stale`) without failing it open: serving still decides on the
    batch counts, so such rows carry real penalties and bindings and must pass the gate."""
    settings, directory = log_dir
    frame = read_log_rows(directory)
    decided = frame.index[~frame["degraded"] & (frame["penalty"] < 1.0)]
    assert len(decided) > 0
    frame.loc[decided, "degraded"] = True
    frame.loc[decided, "degraded_reason"] = "stream_stale"
    report = validate_decision_log(_write_log(frame, tmp_path / "stale"), settings, now=NOW, docs=False)
    assert report.success, report.failure_message()


def test_a_window_keeps_only_its_rows_and_an_empty_one_passes(log_dir):
    settings, directory = log_dir
    frame = read_log_rows(directory)
    ts = pd.to_datetime(frame["ts"], utc=True)
    inside = validate_decision_log(directory, settings, start=T1, end=T1 + timedelta(minutes=1), now=NOW, docs=False)
    assert inside.rows["decision_log"] == int(((ts >= T1) & (ts < T1 + timedelta(minutes=1))).sum()) > 0
    empty = validate_decision_log(directory, settings, start=T1 + timedelta(days=1), now=NOW, docs=False)
    assert empty.success and empty.rows["decision_log"] == 0
    assert {o.skipped for o in empty.outcomes} == {"no rows to validate"}
