"""The randomized holdout as production would run it: a stable hash of the user id keeps a share of users on the
control (baseline) policy; lift is estimated from that split (pure).

Assignment: `u = first 8 bytes of blake2b(salt + ":" + user_id) / 2^64`, holdout iff u < share. It depends on
nothing but the salt and the user id — not on the order, the other users, the process or the day — so a user
stays in the same arm across requests, servers and retrains, and a new salt draws a fresh, independent split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

DEFAULT_SALT = "freqcap-holdout-v1"


def holdout_unit(user_ids: Iterable[str], salt: str = DEFAULT_SALT) -> np.ndarray:
    """The user's position in [0, 1) under `salt` (uniform over users)."""
    prefix = f"{salt}:".encode()
    raw = [
        int.from_bytes(hashlib.blake2b(prefix + str(uid).encode(), digest_size=8).digest(), "big") for uid in user_ids
    ]
    return np.array(raw, dtype=np.uint64).astype(np.float64) / 2.0**64


def holdout_assignment(user_ids: Iterable[str], share: float, salt: str = DEFAULT_SALT) -> np.ndarray:
    """True for users held out on the control policy (about `share` of them)."""
    if not 0.0 < share < 1.0:
        raise ValueError(f"holdout share must be in (0, 1), got {share}")
    return holdout_unit(user_ids, salt) < share
