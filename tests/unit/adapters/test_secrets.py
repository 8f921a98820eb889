"""Pseudonymization keys: from the environment, else generated once (0600) and reused; never echoed."""

from __future__ import annotations

import stat

import pytest

from freqcap.adapters.secrets import load_pseudonymizer
from freqcap.config import load_settings


def test_generated_once_private_and_stable(tmp_path):
    settings = load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path)})
    first = load_pseudonymizer(settings)
    key_file = tmp_path / "secrets" / "pseudonym_keys.yaml"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert load_pseudonymizer(settings)("someone") == first("someone")


def test_environment_keys_win_and_stay_hidden(tmp_path):
    secret = "s3cret-" * 6
    settings = load_settings(
        environ={
            "FREQCAP__DATA_DIR": str(tmp_path),
            "FREQCAP__PRIVACY__KEYS__K1": secret,
            "FREQCAP__PRIVACY__KEYS__K0": "o" * 32,
        }
    )
    assert secret not in repr(settings) and secret not in str(settings.model_dump())
    pseudonymizer = load_pseudonymizer(settings)
    assert pseudonymizer("x").startswith("u.k1.") and pseudonymizer.every_form("x")[1].startswith("u.k0.")
    assert not (tmp_path / "secrets").exists()


def test_disabled_gives_none_and_missing_file_without_create_is_an_error(tmp_path):
    assert load_pseudonymizer(load_settings(environ={"FREQCAP__PRIVACY__ENABLED": "false"})) is None
    with pytest.raises(FileNotFoundError, match=r"privacy\.key_file"):
        load_pseudonymizer(load_settings(environ={"FREQCAP__DATA_DIR": str(tmp_path)}), create=False)
