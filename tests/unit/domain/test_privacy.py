"""Pseudonyms: a keyed HMAC-SHA256 truncated to 128 bits, checked against hashlib/hmac computed here."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from freqcap.domain.privacy import PrivacyKeyError, Pseudonymizer, is_pseudonym

K1, K2 = b"k" * 32, b"second-key-material-of-40-bytes-long!!!!"


def _expected(key: bytes, key_id: str, user_id: str) -> str:
    digest = hmac.new(key, user_id.encode(), hashlib.sha256).digest()[:16]
    return f"u.{key_id}." + base64.urlsafe_b64encode(digest).decode().rstrip("=")


def test_pseudonym_is_the_truncated_hmac_under_the_active_key():
    p = Pseudonymizer({"k1": K1, "k2": K2}, "k2")
    for user_id in ["u1", "user-000042", "ünïcode", ""]:
        assert p(user_id) == _expected(K2, "k2", user_id)
        assert is_pseudonym(p(user_id))
    assert p.many(["a", "b"]) == [_expected(K2, "k2", "a"), _expected(K2, "k2", "b")]


def test_every_form_covers_retired_keys_active_first():
    p = Pseudonymizer({"k1": K1, "k2": K2}, "k2")
    assert p.every_form("u9") == [_expected(K2, "k2", "u9"), _expected(K1, "k1", "u9")]


def test_distinct_ids_and_keys_give_distinct_pseudonyms():
    p = Pseudonymizer({"k1": K1}, "k1")
    q = Pseudonymizer({"k1": K2}, "k1")
    ids = [f"user-{i}" for i in range(5000)]
    assert len(set(p.many(ids))) == len(ids)
    assert not set(p.many(ids)) & set(q.many(ids))
    assert not any(is_pseudonym(i) for i in ids)


@pytest.mark.parametrize(
    ("keys", "active", "field"),
    [
        ({"k1": K1}, "k2", "privacy.active_key"),
        ({"k1": b"short"}, "k1", "privacy.keys.k1"),
        ({"bad.id": K1}, "bad.id", "privacy.keys"),
    ],
)
def test_bad_keys_are_rejected_naming_the_setting_not_the_secret(keys, active, field):
    with pytest.raises(PrivacyKeyError) as err:
        Pseudonymizer(keys, active)
    assert field in str(err.value)
    assert all(k.decode(errors="replace") not in str(err.value) for k in keys.values())
