"""Pseudonyms computed independently of freqcap's code, for tests that compare against brute force on raw ids.

The expected pseudonym of a raw id is HMAC-SHA256(key, id) truncated to 128 bits, url-safe base64 without padding,
prefixed `u.<key id>.` (the documented format, docs/concepts/privacy.md), with the key read from the settings'
secret or the data directory's key file.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path
from typing import Any

import yaml


def active_key(settings: Any) -> tuple[str, bytes]:
    """(key id, key) the pipeline pseudonymizes with: `privacy.keys` if set, else the generated key file."""
    privacy = settings.privacy
    if privacy.keys:
        return privacy.active_key, privacy.keys[privacy.active_key].get_secret_value().encode()
    path = Path(privacy.key_file) if privacy.key_file else Path(settings.data_dir) / "secrets" / "pseudonym_keys.yaml"
    loaded = yaml.safe_load(path.read_text())
    return privacy.active_key, loaded["keys"][privacy.active_key].encode()


def pseudonym_of(settings: Any):
    """A function raw id -> expected pseudonym under the settings' active key (identity when privacy is off)."""
    if not settings.privacy.enabled:
        return lambda user_id: user_id
    key_id, key = active_key(settings)
    cache: dict[str, str] = {}

    def pseudonym(user_id: str) -> str:
        if user_id not in cache:
            digest = hmac.new(key, user_id.encode(), hashlib.sha256).digest()[:16]
            cache[user_id] = f"u.{key_id}." + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        return cache[user_id]

    return pseudonym


def with_pseudonyms(settings: Any, rows: list[dict]) -> list[dict]:
    """Event rows with `user_id` replaced by its expected pseudonym (the other fields as they are)."""
    p = pseudonym_of(settings)
    return [{**r, "user_id": p(r["user_id"])} if r.get("user_id") is not None else dict(r) for r in rows]
