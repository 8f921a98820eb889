"""Run the decision API for real (uvicorn on a loopback port, in a thread) for tests that talk HTTP to it."""

from __future__ import annotations

from contextlib import AbstractContextManager

from freqcap.api.live import free_port, serve_in_thread

__all__ = ["free_port", "live_server"]


def live_server(app, port: int | None = None) -> AbstractContextManager[str]:
    """Serve `app` on 127.0.0.1 until the block ends; yields the base URL once /healthz answers."""
    return serve_in_thread(app, host="127.0.0.1", port=port or 0)
