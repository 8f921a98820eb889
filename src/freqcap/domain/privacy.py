"""Pseudonymous user ids: a keyed HMAC applied at the ingestion edge, so no store downstream holds a raw id.

A pseudonym is `u.<key id>.<22 url-safe base64 characters>` (the first 128 bits of HMAC-SHA256(key, user id)).
The key id inside it says which key made it, so keys can rotate: the active key pseudonymizes new data while the
retired keys stay known long enough to find (and forget) what they made. 128 bits keep collisions out of reach
(about 2^64 ids before one is likely) at a third of the bytes of the full digest.

Pure: no I/O. Where the keys come from (secret configuration, a generated key file) is the adapters' business
(`freqcap.adapters.secrets`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

PREFIX = "u."
# A key id is short and has no dot, so a pseudonym splits unambiguously.
KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,16}$")
MIN_KEY_BYTES = 32
_DIGEST_BYTES = 16
PSEUDONYM_PATTERN = re.compile(r"^u\.[A-Za-z0-9_-]{1,16}\.[A-Za-z0-9_-]{22}$")


class PrivacyKeyError(ValueError):
    """The pseudonymization keys are missing, too short or name no active key."""


def is_pseudonym(text: str) -> bool:
    """Whether `text` has the shape of a pseudonym (any key)."""
    return bool(PSEUDONYM_PATTERN.match(text))


@dataclass(frozen=True)
class Pseudonymizer:
    """Maps raw user ids to pseudonyms under the active key; knows every retained key for forgetting."""

    keys: Mapping[str, bytes]
    active: str
    _macs: dict[str, object] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise PrivacyKeyError(f"privacy.active_key: {self.active!r} is not among the keys {sorted(self.keys)}")
        for key_id, key in self.keys.items():
            if not KEY_ID_PATTERN.match(key_id):
                raise PrivacyKeyError(f"privacy.keys: key id {key_id!r} must be 1-16 of [A-Za-z0-9_-]")
            if len(key) < MIN_KEY_BYTES:
                raise PrivacyKeyError(f"privacy.keys.{key_id}: at least {MIN_KEY_BYTES} bytes of key material")
            # A keyed HMAC object per key, copied per id: skips re-deriving the padded key blocks every call.
            self._macs[key_id] = hmac.new(key, digestmod=hashlib.sha256)

    def under(self, key_id: str, user_id: str) -> str:
        """The pseudonym of `user_id` under the key `key_id`."""
        mac = self._macs[key_id].copy()  # type: ignore[attr-defined]
        mac.update(user_id.encode("utf-8"))
        digest = base64.urlsafe_b64encode(mac.digest()[:_DIGEST_BYTES]).rstrip(b"=").decode("ascii")
        return f"{PREFIX}{key_id}.{digest}"

    def __call__(self, user_id: str) -> str:
        """The pseudonym of `user_id` under the active key (what ingestion and serving use)."""
        return self.under(self.active, user_id)

    def many(self, user_ids: Iterable[str]) -> list[str]:
        """Pseudonyms of several ids under the active key, in order."""
        return [self(user_id) for user_id in user_ids]

    def every_form(self, user_id: str) -> list[str]:
        """The pseudonyms of `user_id` under every retained key, active first (what `forget` must look for)."""
        order = [self.active, *sorted(k for k in self.keys if k != self.active)]
        return [self.under(key_id, user_id) for key_id in order]
