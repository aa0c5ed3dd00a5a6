"""The console's HTTP routes on the worker's web server: the page, its static files and its JSON API.

    GET  /console/                 the page (static files under /console/static/)
    GET  /console/api/pipeline?after=T   totals, rates (after T), lag, open windows (admin)
    GET  /console/api/tenants      one row per key the caller may read
    GET  /console/api/keys         the keys the caller may read
    GET  /console/api/names?key=K&window=1s&search=S   metric names of a key
    POST /console/api/query        a scoped query spec of ``/query`` (``{"stream": ..., "key": ...}``)

Refusals answer ``{"error": message}`` with the status and counter of ``/query`` (401, 403, 400...).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

from aiohttp.web import HTTPRequestEntityTooLarge
from faust.web import Request, Response, View

from sluice.streams.console.data import ConsoleData
from sluice.streams.console.host import ConsoleHost
from sluice.streams.query_api import Refused


STATIC = {
    "console.js": "text/javascript",
    "console.css": "text/css",
    "vendor/uPlot.iife.min.js": "text/javascript",
    "vendor/uPlot.min.css": "text/css",
}
SAMPLE_INTERVAL = 1.0

Handler = Callable[[str | None, Request], Awaitable[Any]]


def _static(name: str) -> bytes:
    return resources.files("sluice.streams.console").joinpath("static", name).read_bytes()


def mount(worker: ConsoleHost) -> ConsoleData:
    """Serve the console on ``worker``'s web server and sample its counters every second."""
    app, data = worker.app, ConsoleData(worker)

    @app.timer(interval=SAMPLE_INTERVAL)  # type: ignore[untyped-decorator]
    async def sample_console_series() -> None:
        await data.sample()

    page = _static("index.html")
    for path in ("/console", "/console/"):
        app.page(path)(_file_view(page, "text/html"))
    for name, content_type in STATIC.items():
        app.page(f"/console/static/{name}")(_file_view(_static(name), content_type))

    async def pipeline(caller: str | None, request: Request) -> Any:
        after = request.query.get("after")
        try:
            since = None if after is None else float(after)
        except ValueError:
            raise Refused(400, "bad_request", f"the query parameter 'after' must be a unix time, got {after!r}") from None
        return data.pipeline(caller, since)

    async def tenants(caller: str | None, request: Request) -> Any:
        return data.tenants(caller)

    async def keys(caller: str | None, request: Request) -> Any:
        return data.keys(caller)

    async def names(caller: str | None, request: Request) -> Any:
        query = request.query
        key = query.get("key")
        if not key:
            raise Refused(400, "bad_request", "the query parameter 'key' is missing")
        return await data.names(caller, key, query.get("window", "1s"), query.get("search", ""))

    async def query(caller: str | None, request: Request) -> Any:
        try:
            spec = json.loads(await request.read())
        except HTTPRequestEntityTooLarge as exc:
            raise Refused(413, "bad_request", exc.text or "body too large") from exc
        except ValueError as exc:
            raise Refused(400, "bad_request", f"expected a JSON object, a scoped query spec: {exc}") from exc
        if not isinstance(spec, dict):
            raise Refused(400, "bad_request", "expected a JSON object, a scoped query spec")
        return await data.query(caller, spec)

    for name, handler in (("pipeline", pipeline), ("tenants", tenants), ("keys", keys), ("names", names)):
        app.page(f"/console/api/{name}")(_api_view(data, get=handler))
    app.page("/console/api/query")(_api_view(data, post=query))
    return data


def _file_view(body: bytes, content_type: str) -> type[View]:
    class FileView(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(body, content_type=content_type, headers={"cache-control": "no-cache"})

    return FileView


def _api_view(data: ConsoleData, *, get: Handler | None = None, post: Handler | None = None) -> type[View]:
    async def answer(view: View, request: Request, handler: Handler) -> Response:
        data.viewed()
        try:
            caller = data.access.caller(request.headers)
            status, body = 200, await handler(caller, request)
        except Refused as exc:
            status, body = data.refuse(exc)
        return view.bytes(
            json.dumps(body, default=str).encode(), content_type="application/json", status=status,
            headers={"www-authenticate": "Bearer"} if status == 401 else None,
        )

    async def dispatch(view: View, request: Request, handler: Handler | None) -> Response:
        if handler is None:
            return view.json({"error": f"{request.method} is not allowed here"}, status=405)
        return await answer(view, request, handler)

    class ApiView(View):
        async def get(self, request: Request) -> Response:
            return await dispatch(self, request, get)

        async def post(self, request: Request) -> Response:
            return await dispatch(self, request, post)

    return ApiView
