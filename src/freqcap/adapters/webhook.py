"""POST a JSON body to a webhook, with retries and backoff; the URL is a secret (it may hold a token).

Standard library HTTP (`urllib.request`) on purpose: it logs nothing, so the URL cannot leak through a client
library's request log. Errors are reported without the URL (`Delivery.error` is safe to log and store).
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import SecretStr

# Worth another try: the receiver is down, overloaded or rate limiting. Other 4xx: the receiver rejects the body.
_RETRYABLE = {408, 425, 429, 500, 502, 503, 504}


@dataclass(frozen=True)
class Delivery:
    ok: bool
    attempts: int
    status: int | None  # the last HTTP status, None when no response came
    error: str | None  # why it failed (no URL in it)
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _scrub(text: str, url: str) -> str:
    """`text` without the URL or any of its secret-bearing parts (path, query, user info)."""
    parts = urlsplit(url)
    for secret in (url, parts.path, parts.query, parts.netloc if "@" in parts.netloc else ""):
        if secret and secret != "/":
            text = text.replace(secret, "<redacted>")
    return text


def post_json(
    url: SecretStr,
    body: dict[str, Any],
    *,
    timeout: float,
    attempts: int,
    backoff: float,
    backoff_max: float,
    sleep: Callable[[float], None] = time.sleep,
) -> Delivery:
    """POST `body` as JSON; a 2xx answer is delivered. Retries connection errors, timeouts and 408/425/429/5xx up
    to `attempts` times, waiting `backoff · 2^k` (at most `backoff_max`) between them."""
    started = time.perf_counter()
    raw = url.get_secret_value()
    data = json.dumps(body).encode()
    status: int | None = None
    error: str | None = None
    for attempt in range(1, attempts + 1):
        request = urllib.request.Request(raw, data=data, method="POST", headers={"Content-Type": "application/json"})
        retry = True
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status = response.status
                response.read()
            if 200 <= status < 300:
                return Delivery(True, attempt, status, None, time.perf_counter() - started)
            error = f"HTTP {status}"
        except urllib.error.HTTPError as exc:
            status, error = exc.code, f"HTTP {exc.code}"
            retry = exc.code in _RETRYABLE
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            status = None
            reason = getattr(exc, "reason", exc)
            error = _scrub(f"{type(exc).__name__}: {reason}", raw)
        if not retry or attempt == attempts:
            break
        sleep(min(backoff * 2 ** (attempt - 1), backoff_max))
    return Delivery(False, attempt, status, error, time.perf_counter() - started)
