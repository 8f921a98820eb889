"""`POST /v1/decide` answered straight from ASGI: the body decoded by msgspec (`wire`), `decide.answer`, the
response encoded by msgspec and sent without Starlette's request, routing and middleware layers.

Why: under load the framework's per-request work (body validation by pydantic, routing, three middleware layers,
the Response object) cost more CPU than the decision itself (profiled at 1,000 requests/s with 100 candidates:
docs/benchmarks/http.md). What the fast path does not take as it stands, it hands to the FastAPI app unchanged
(the body replayed): a content type other than JSON, a body msgspec refuses (pydantic then answers 422, or reads a
form only it accepts), so the route in `routes` and its published schema remain the contract.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from freqcap.api.decide import answer, crashed
from freqcap.api.schemas import encode
from freqcap.api.server import arrived
from freqcap.api.wire import decode_decide

log = logging.getLogger(__name__)

DECIDE_PATH = "/v1/decide"
# A 500-candidate request is ~60 KB; a body far beyond that is refused before it is parsed.
MAX_BODY_BYTES = 1 << 20

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_JSON_HEADERS = [(b"content-type", b"application/json")]


def is_decide(scope: Scope) -> bool:
    """Is this ASGI request a decide call the fast path answers?"""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == DECIDE_PATH


async def handle_decide(state: Any, scope: Scope, receive: Receive, send: Send, fallback: ASGIApp) -> None:
    """Answer one decide request; `fallback` (the FastAPI app) gets whatever msgspec does not decode."""
    body = await _read_body(receive)
    if body is None:
        return  # the client went away mid-body: nobody to answer
    if len(body) > MAX_BODY_BYTES:
        await _send(send, 413, encode({"detail": f"request body over {MAX_BODY_BYTES} bytes"}))
        return
    request = decode_decide(body) if _json_content(scope) else None
    if request is None:
        await fallback(scope, _replay(body, receive), send)
        return
    try:
        out = await answer(state, request, arrived(scope))
    except Exception as exc:  # never a 5xx on the decide path: whatever broke, the ad server gets "no penalty"
        log.exception("decide failed outside its guard")
        out = crashed(state, request, exc)
    await _send(send, 200, encode(out))


async def _read_body(receive: Receive) -> bytes | None:
    """The whole body (None if the client disconnected); stops reading past the size limit."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
        if not message.get("more_body", False) or size > MAX_BODY_BYTES:
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _json_content(scope: Scope) -> bool:
    """No content type, or a JSON one: the bodies FastAPI reads as JSON (anything else is its 422)."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == b"application/json" or (kind.startswith(b"application/") and kind.endswith(b"+json"))
    return True


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that yields the body already read, then defers to the real one (disconnects)."""
    sent = False

    async def replayed() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _send(send: Send, status: int, payload: bytes) -> None:
    headers = [*_JSON_HEADERS, (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
