"""A small client of the decision API's policy endpoints, for the publish step (an adapter: HTTP only).

Errors are typed so that the caller can tell "retry later" (`ServingUnreachable`: connection refused, timeout,
5xx) from "this will never work" (`PolicyRejected`: 401/422 — a bad token or a policy serving refuses).
"""

from __future__ import annotations

from typing import Any

import httpx

from freqcap.errors import FreqcapError


class ServingUnreachable(FreqcapError):
    """Serving did not answer (or answered 5xx): worth retrying; serving keeps its current policy."""


class PolicyRejected(FreqcapError):
    """Serving refused the request (bad token, invalid policy): retrying will not help."""


class ServingClient:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 5.0):
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _request(self, method: str, path: str, *, allow: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        try:
            resp = httpx.request(method, self.base_url + path, timeout=self.timeout, **kwargs)
        except httpx.HTTPError as exc:
            raise ServingUnreachable(f"{method} {self.base_url}{path}: {type(exc).__name__}: {exc}") from exc
        if resp.status_code >= 500 and resp.status_code not in allow:
            raise ServingUnreachable(f"{method} {self.base_url}{path}: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp

    def current_policy(self) -> dict[str, Any] | None:
        """`{"version", "policy"}` of the live policy, or None when serving runs without one (503)."""
        resp = self._request("GET", "/v1/policy", allow=(503,))
        if resp.status_code == 503:
            return None
        resp.raise_for_status()
        return resp.json()

    def push_policy(self, policy_text: str) -> dict[str, Any]:
        """Load a policy (YAML or JSON text) through the admin endpoint; returns serving's answer."""
        headers = {"Content-Type": "application/yaml"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        resp = self._request("POST", "/v1/admin/policy", content=policy_text.encode(), headers=headers)
        if resp.status_code >= 400:
            try:
                detail = resp.json().get("detail", resp.text)
            except ValueError:
                detail = resp.text
            raise PolicyRejected(f"serving refused the policy (HTTP {resp.status_code}): {detail}")
        return resp.json()
