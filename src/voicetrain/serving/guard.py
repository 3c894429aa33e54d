"""Checks every request passes before a route sees it, shared by the voice server (serving/http.py) and the
studio (studio/app.py): the API key, and the body-size limit enforced before the body is read. Plus the
``{"detail": ...}`` error body both answer with, and pydantic's validation errors named field by field.

It lives in serving/ because the studio may import serving and serving must not import the studio
(tests/test_layers.py). Each caller renders a :class:`Refusal` in its own error shape (the OpenAI routes
answer in OpenAI's).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any, Optional

KEY_HELP = "missing or wrong API key: send it as 'X-API-Key: KEY' or 'Authorization: Bearer KEY'"


@dataclass(frozen=True)
class Refusal:
    """Why a request is refused before its route runs."""

    status: int
    detail: str
    code: str
    """OpenAI's error code for the same refusal (invalid_api_key, request_too_large)."""
    headers: Optional[dict[str, str]] = None


def detail_error(status: int, detail: str, headers: Optional[dict[str, str]] = None):
    """voicetrain's error body: ``{"detail": "what is wrong and how to fix it"}``."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def key_ok(request, api_key: Optional[str], *, query: bool = False) -> bool:
    """True when no key is required, or the request carries it (X-API-Key, Authorization: Bearer, and with
    ``query`` also ``?key=``, which audio elements and download links need: they cannot set headers)."""
    if not api_key:
        return True
    given = request.headers.get("x-api-key")
    if given is None and query:
        given = request.query_params.get("key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return given is not None and hmac.compare_digest(given.encode(), api_key.encode())


async def refuse(request, *, api_key: Optional[str], key_prefix: str, limit: int, too_big: str,
                 methods: tuple[str, ...] = ("POST",), key_in_query: bool = False) -> Optional[Refusal]:
    """The refusal for ``request``, or None to let it through.

    The key is checked first, on paths under ``key_prefix``: a client without it learns nothing else. A body
    over ``limit`` bytes is refused from its declared Content-Length before anything is read, or, when the
    length is not declared (chunked) on one of ``methods``, as soon as the stream passes the limit; a body read
    here is cached where Starlette reads it from, so the route still gets it.
    """
    if request.url.path.startswith(key_prefix) and not key_ok(request, api_key, query=key_in_query):
        return Refusal(401, KEY_HELP, "invalid_api_key", {"WWW-Authenticate": "Bearer"})
    declared = request.headers.get("content-length")
    over = Refusal(413, too_big, "request_too_large")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return over
    if request.method in methods and declared is None:
        received, chunks = 0, []
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                return over
            chunks.append(chunk)
        request._body = b"".join(chunks)  # Starlette reads the cached body from here
    return None


def describe_errors(errors: list[dict[str, Any]], max_reported: int) -> str:
    """pydantic's errors as one line, ``field: problem; ...``, the first ``max_reported`` of them: a body of
    thousands of bad keys gets a few problems named, not a reply larger than itself."""
    problems = []
    for e in errors[:max_reported]:
        loc = ".".join(str(x) for x in e.get("loc", ()) if x != "body") or "body"
        problems.append(f"{loc}: {e.get('msg', 'invalid')}")
    more = f" (and {len(errors) - max_reported} more)" if len(errors) > max_reported else ""
    return "invalid request: " + "; ".join(problems) + more
