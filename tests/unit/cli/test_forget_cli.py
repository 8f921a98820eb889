"""`freqcap forget` on a small data directory: the forms matched (pseudonyms computed here with hmac directly),
bad input refused with the field named and nothing deleted, request files, the audit record."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from freqcap.cli.main import main
from freqcap.config import load_settings
from freqcap.jobs.forget import ForgetRequestError, read_request_file
from freqcap.layout import DataLayout

KEYS = {"old": "o" * 40, "new": "n" * 40}


def pseudonym(key_id: str, user: str) -> str:
    digest = hmac.new(KEYS[key_id].encode(), user.encode(), hashlib.sha256).digest()[:16]
    return f"u.{key_id}." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def layout(tmp_path, monkeypatch):
    monkeypatch.setenv("FREQCAP__DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("FREQCAP__PRIVACY__ACTIVE_KEY", "new")
    for key_id, secret in KEYS.items():
        monkeypatch.setenv(f"FREQCAP__PRIVACY__KEYS__{key_id.upper()}", secret)
    layout = DataLayout.of(load_settings())
    users = ["alice", pseudonym("old", "alice"), pseudonym("new", "alice"), "bob", pseudonym("new", "bob"), "carol"]
    path = layout.events_dir / "part-0.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.table({"event_id": [f"e{i}" for i in range(len(users))], "user_id": users}), path)
    return layout


def _users(layout):
    return pq.read_table(layout.events_dir / "part-0.parquet").column("user_id").to_pylist()


def test_every_form_of_the_raw_id_goes_and_the_audit_holds_only_a_hash(layout, capsys):
    assert main(["forget", "--user", "alice"]) == 0
    assert _users(layout) == ["bob", pseudonym("new", "bob"), "carol"]
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["raw_events"] == 3 and out["residual"] == []
    text = layout.forget_audit.read_text()
    assert "alice" not in text and "u.old." not in text and "u.new." not in text
    assert json.loads(text)["subjects"] == ["sha256:" + hashlib.sha256(pseudonym("new", "alice").encode()).hexdigest()]
    assert main(["forget", "--user", "alice"]) == 0  # idempotent
    assert json.loads(capsys.readouterr().out)["removed_total"] == 0
    assert len(layout.forget_audit.read_text().splitlines()) == 2


def test_a_pseudonym_alone_removes_only_that_form(layout, capsys):
    assert main(["forget", "--pseudonym", pseudonym("new", "bob")]) == 0
    assert "bob" in _users(layout) and pseudonym("new", "bob") not in _users(layout)


def test_bad_input_names_the_field_and_deletes_nothing(layout, capsys):
    assert main(["forget", "--user", "alice", "--pseudonym", "not-a-pseudonym"]) == 2
    assert "pseudonyms[0]" in capsys.readouterr().err
    assert main(["forget"]) == 2
    assert "users" in capsys.readouterr().err
    assert len(_users(layout)) == 6 and not layout.forget_audit.exists()


def test_from_file_json_and_text(layout, tmp_path, capsys):
    (tmp_path / "r.txt").write_text(f"# requests\n\nalice\n{pseudonym('new', 'bob')}\n")
    assert read_request_file(tmp_path / "r.txt") == (["alice"], [pseudonym("new", "bob")])
    (tmp_path / "r.json").write_text(json.dumps({"users": ["carol"]}))
    assert main(["forget", "--from-file", str(tmp_path / "r.txt"), "--from-file", str(tmp_path / "r.json")]) == 0
    assert _users(layout) == ["bob"]
    (tmp_path / "bad.json").write_text(json.dumps({"users": "carol"}))
    with pytest.raises(ForgetRequestError, match="`users` must be a list"):
        read_request_file(tmp_path / "bad.json")


def test_residual_files_are_reported_and_fail_the_command(layout, capsys):
    # A format forget does not know (a text log) that holds the pseudonym: listed, and the exit code says so.
    (layout.root / "logs").mkdir()
    (layout.root / "logs" / "app.log").write_text(f"request for {pseudonym('new', 'alice')}\n")
    assert main(["forget", "--user", "alice"]) == 1
    assert json.loads(capsys.readouterr().out)["residual"] == ["logs/app.log"]
