"""The serving admin token as a secret: a minimum length checked at start (naming the setting, never the value),
never in a repr, a log or an error; two tokens accepted during a rotation; `--dev` on loopback only."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from freqcap.api.app import create_app
from freqcap.api.dependencies import admin_token_list
from freqcap.cli.main import is_loopback, main
from freqcap.config import load_settings
from tests.integration.test_serving import FakeReader, policy_doc, write_policy

OLD = "old-admin-token-" + "o" * 16  # 32 characters
NEW = "new-admin-token-" + "n" * 16
SHORT = "x" * 23  # one below the documented minimum of 24


def _env(**values: str) -> dict[str, str]:
    return {f"FREQCAP__SERVING__{k.upper()}": v for k, v in values.items()}


@pytest.mark.parametrize("setting", ["admin_token", "admin_token_next"])
def test_a_short_token_is_refused_naming_the_setting_not_the_value(setting):
    with pytest.raises(ValidationError) as caught:
        load_settings(environ=_env(**{setting: SHORT}))
    message = str(caught.value)
    assert f"serving.{setting}" in message and "at least 24" in message
    assert SHORT not in message


def test_minimum_length_is_24_characters_and_whitespace_is_refused():
    assert load_settings(environ=_env(admin_token="y" * 24)).serving.admin_tokens == ("y" * 24,)
    with pytest.raises(ValidationError, match="whitespace"):
        load_settings(environ=_env(admin_token='"' + "y" * 30 + ' "'))  # environment values are read as YAML
    assert load_settings(environ={}).serving.admin_tokens == ()  # unset: only --dev starts


def test_tokens_never_appear_in_a_repr_or_a_dump():
    settings = load_settings(environ=_env(admin_token=OLD, admin_token_next=NEW))
    assert settings.serving.admin_tokens == (OLD, NEW)
    for shown in (repr(settings), str(settings.serving), settings.model_dump_json()):
        assert OLD not in shown and NEW not in shown


def test_create_app_refuses_a_short_token_without_repeating_it(tmp_path):
    with pytest.raises(ValueError, match=r"serving\.admin_token is too short") as caught:
        create_app(load_settings(environ={}), policy_path=write_policy(tmp_path), admin_token=SHORT)
    assert SHORT not in str(caught.value)
    with pytest.raises(ValueError, match=r"serving\.admin_token is required"):
        create_app(load_settings(environ={}), policy_path=write_policy(tmp_path), admin_token=("", ""))
    assert admin_token_list([OLD, "", NEW]) == (OLD, NEW)


def test_during_a_rotation_both_tokens_are_accepted_and_nothing_else(tmp_path, caplog):
    settings = load_settings(environ=_env(admin_token=OLD, admin_token_next=NEW))
    app = create_app(
        settings, policy_path=write_policy(tmp_path), reader=FakeReader(), admin_token=settings.serving.admin_tokens
    )
    caplog.set_level(logging.DEBUG)
    with TestClient(app) as client:

        def push(version: str, authorization: str | None) -> int:
            headers = {"Authorization": authorization} if authorization is not None else {}
            return client.post("/v1/admin/policy", json=policy_doc(version), headers=headers).status_code

        assert push("p2", f"Bearer {OLD}") == 200
        assert push("p3", f"bearer {NEW}") == 200  # the scheme is case-insensitive (RFC 7235)
        refused = [None, "", OLD, f"Basic {OLD}", f"Bearer {OLD[:-1]}", f"Bearer {OLD}x", f"Bearer {OLD}{NEW}"]
        assert [push("p4", a) for a in refused] == [401] * len(refused)
        assert client.get("/v1/policy").json()["version"] == "p3"  # the refused pushes changed nothing
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert OLD not in logged and NEW not in logged


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("192.168.1.1", False),
        ("example.com", False),
        ("", False),
    ],
)
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("host_args", [["--host", "0.0.0.0"], ["--host", "::"], ["--host", "10.1.2.3"]])
def test_serve_dev_refuses_a_non_loopback_host(host_args, capsys, monkeypatch):
    monkeypatch.delenv("FREQCAP__SERVING__ADMIN_TOKEN", raising=False)
    assert main(["serve", "--dev", *host_args]) == 2
    assert "--dev serves on loopback only" in capsys.readouterr().err


def test_serve_dev_refuses_a_configured_non_loopback_host(capsys, monkeypatch):
    monkeypatch.setenv("FREQCAP__SERVING__HOST", "0.0.0.0")
    assert main(["serve", "--dev"]) == 2
    assert "'0.0.0.0'" in capsys.readouterr().err


def test_serve_refuses_a_short_token_at_start_naming_the_setting(capsys, monkeypatch):
    monkeypatch.setenv("FREQCAP__SERVING__ADMIN_TOKEN", SHORT)
    assert main(["serve"]) == 2
    err = capsys.readouterr().err
    assert "serving.admin_token" in err and "at least 24" in err and SHORT not in err
