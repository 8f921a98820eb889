"""The audit log appends whole lines (0600) and reads past a torn last line; the residual scan finds needles across
chunk boundaries."""

from __future__ import annotations

import stat

from freqcap.adapters import residual_scan
from freqcap.adapters.audit_log import append_record, read_records
from freqcap.adapters.residual_scan import files_containing


def test_append_and_read(tmp_path):
    path = tmp_path / "privacy" / "audit.jsonl"
    append_record(path, {"a": 1})
    append_record(path, {"b": [1, 2]})
    with path.open("a") as f:
        f.write('{"torn": ')  # a crash mid-write
    assert read_records(path) == [{"a": 1}, {"b": [1, 2]}]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_residual_scan_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(residual_scan, "_CHUNK", 8)
    (tmp_path / "a.bin").write_bytes(b"xxxxxxu.k1.SECRETyyyy")  # the needle straddles two 8-byte chunks
    (tmp_path / "b.bin").write_bytes(b"nothing here at all")
    (tmp_path / "skip.bin").write_bytes(b"u.k1.SECRET")
    hits = files_containing(tmp_path, [b"u.k1.SECRET"], skip=[tmp_path / "skip.bin"])
    assert hits == [tmp_path / "a.bin"]
