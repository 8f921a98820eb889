"""Batch validation as the ingestion edge: with a pseudonymizer, every output holds pseudonyms, never a raw id,
and every verdict is the one the same run makes on raw ids.

The expected pseudonyms are computed here with `hmac` directly (the documented format), not with freqcap's code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path

import pyarrow as pa

from freqcap.adapters.gx import validate_events
from freqcap.domain.privacy import Pseudonymizer
from tests.unit.adapters.gx.builders import AS_OF, config, ev, read_rows, valid_batch, write_rows

KEY = b"k" * 40


def expected(user_id: str) -> str:
    digest = hmac.new(KEY, user_id.encode(), hashlib.sha256).digest()[:16]
    return "u.k1." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _rows() -> list[dict]:
    rows = valid_batch(n_users=6)
    rows += [ev("bad-format", user_id="u-bad", format="tv"), ev("null-user", user_id=None)]
    rows += [dict(rows[0])]  # a duplicate of the first event
    return rows


def _schema_failure(path: Path) -> None:
    """A file whose conversion_value is text: every row fails the schema rule, its original kept as JSON."""
    table = pa.table(
        {
            "event_id": ["s1", "s2"],
            "event_type": ["impression", "impression"],
            "event_ts": pa.array([AS_OF, AS_OF], pa.timestamp("us", tz="UTC")),
            "user_id": ["u-schema", "u0"],
            "advertiser_id": ["v1", "v1"],
            "campaign_id": ["c1", "c1"],
            "ad_id": ["a1", "a1"],
            "format": ["feed", "feed"],
            "conversion_value": ["1.0", "x"],
        }
    )
    import pyarrow.parquet as pq

    pq.write_table(table, path)


def test_outputs_hold_pseudonyms_and_verdicts_equal_the_raw_run(tmp_path):
    events = tmp_path / "ev"
    rows = _rows()
    write_rows(events / "part-0.parquet", rows)
    _schema_failure(events / "part-1.parquet")
    raw = validate_events(events, as_of=AS_OF, config=config(max_bad_share=1.0), out_dir=tmp_path / "raw")
    private = validate_events(
        events,
        as_of=AS_OF,
        config=config(max_bad_share=1.0),
        out_dir=tmp_path / "private",
        pseudonymizer=Pseudonymizer({"k1": KEY}, "k1"),
    )
    # Same verdicts.
    for field in ("total_rows", "clean_rows", "invalid_rows", "duplicates_removed", "invalid_by_rule"):
        assert getattr(private, field) == getattr(raw, field), field
    # The clean events: the raw run's rows with the user id mapped, nothing else changed.
    raw_clean = read_rows(raw.clean_path)
    private_clean = read_rows(private.clean_path)
    assert private_clean == [{**r, "user_id": expected(r["user_id"])} for r in raw_clean]
    # The quarantine: same rows and reasons; user ids mapped (a null stays null), and in the raw JSON too.
    raw_q = read_rows(tmp_path / "raw" / "quarantine.parquet")
    private_q = read_rows(tmp_path / "private" / "quarantine.parquet")
    assert [r["reason"] for r in private_q] == [r["reason"] for r in raw_q]
    assert {r["reason"] for r in private_q} >= {"format_in_set", "user_id_not_null", "duplicate", "schema"}
    for have, want in zip(private_q, raw_q, strict=True):
        mapped = None if want["user_id"] is None else expected(want["user_id"])
        assert have["user_id"] == mapped
        if want["raw"] is not None:
            assert json.loads(have["raw"]) == {**json.loads(want["raw"]), "user_id": mapped}
    # No raw id anywhere in what the private run wrote (its files, as bytes and decoded).
    ids = {r["user_id"] for r in rows if r["user_id"]} | {"u-schema"}
    for path in (tmp_path / "private").rglob("*"):
        if path.is_file():
            text = path.read_bytes() + repr(read_rows(path) if path.suffix == ".parquet" else "").encode()
            found = {i for i in ids if f'"{i}"'.encode() in text or f"'{i}'".encode() in text}
            assert not found, (path, found)
