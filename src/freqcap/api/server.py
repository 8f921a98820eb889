"""How serving runs under uvicorn: its HTTP protocol stamps each request's arrival, so that admission measures the
whole wait in the process (`ServingState.admit`), not only the wait for a lookup slot.

A request that waits behind others in a busy process (for the event loop, then for a slot) has spent its time
before any handler runs; without the stamp the handler cannot know. With it, a request whose lookup cannot start
within `serving.admission_ms` of its arrival is answered at once, fail-open `overload`, whatever it waited for.
"""

from __future__ import annotations

import time
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

ARRIVED = "freqcap.arrived"  # scope key: time.perf_counter() when the request line began to parse


class StampedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the arrival time of each request in its ASGI scope (`ARRIVED`)."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope[ARRIVED] = time.perf_counter()  # type: ignore[typeddict-unknown-key]


def uvicorn_options() -> dict[str, Any]:
    """The uvicorn settings every serving process uses (`freqcap serve`, its workers, `live.serve_in_thread`)."""
    return {"http": StampedHttpToolsProtocol}


def arrived(scope: dict[str, Any]) -> float | None:
    """When this request arrived (perf_counter seconds), if the server stamped it."""
    return scope.get(ARRIVED)
