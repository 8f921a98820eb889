"""Where the pseudonymization keys come from: secret configuration, or a key file generated once.

The keys never reach a log line, an exception message or a metric: errors name the setting, not its value.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

import yaml

from freqcap.config import Settings
from freqcap.domain.privacy import Pseudonymizer
from freqcap.layout import DataLayout

log = logging.getLogger(__name__)


def _key_file(settings: Settings) -> Path:
    configured = settings.privacy.key_file
    return Path(configured) if configured else DataLayout.of(settings).pseudonym_key_file


def _generate(path: Path, key_id: str) -> dict[str, str]:
    """Write a fresh random key to `path` with mode 0600 (created exclusively: two processes cannot both win)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys = {key_id: secrets.token_urlsafe(48)}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read(path)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump({"active_key": key_id, "keys": keys}, handle)
    log.warning("no pseudonymization key configured: generated one into %s (set privacy.keys in production)", path)
    return keys


def _read(path: Path) -> dict[str, str]:
    loaded = yaml.safe_load(path.read_text()) or {}
    keys = loaded.get("keys") or {}
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise ValueError(f"{path}: expected a mapping `keys: {{<key id>: <secret>}}`")
    return {str(k): v for k, v in keys.items()}


def load_pseudonymizer(settings: Settings, *, create: bool = True) -> Pseudonymizer | None:
    """The pseudonymizer of `settings` (None when privacy is disabled).

    Keys from `privacy.keys` (the environment); else from the key file, generated on first use when `create`.
    """
    privacy = settings.privacy
    if not privacy.enabled:
        return None
    if privacy.keys:
        raw = {key_id: secret.get_secret_value() for key_id, secret in privacy.keys.items()}
    else:
        path = _key_file(settings)
        if path.exists():
            raw = _read(path)
        elif create:
            raw = _generate(path, privacy.active_key)
        else:
            raise FileNotFoundError(f"privacy.key_file: {path} does not exist and no privacy.keys are configured")
    return Pseudonymizer({key_id: value.encode("utf-8") for key_id, value in raw.items()}, privacy.active_key)
