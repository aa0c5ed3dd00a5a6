"""The HTTP writes' aiohttp server, hardened against clients that send too much or too slowly.

* **Header timeout.** aiohttp has no timeout of its own for a request's headers, but its
  keep-alive timer, armed when a connection opens and after each response, closes a connection
  still waiting for a whole request when it fires (``RequestHandler._process_keepalive``). Set to
  ``protocols.header_timeout``, it closes a client that has not sent a request's headers within
  that many seconds of connecting (or of its previous response), however it trickles them; an
  idle keep-alive connection is closed as soon, which clients reconnect from. Closures of
  connections that had sent part of a request are counted as ``header_timeout``.
* **Bad requests.** A request line or header over aiohttp's limits (8190 bytes, 128 headers) is
  answered 431, any other unparsable request 400, each with a JSON message naming the problem,
  counted, and logged at debug level without the traceback aiohttp would log for each one.

The body's own timeout (``protocols.body_timeout``) is the handlers' (see :mod:`.http`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

log = logging.getLogger(__name__)

Refused = Callable[[str], None]  # counts a refusal by reason


class _Handler(RequestHandler):
    """aiohttp's connection handler, refusing bad requests quietly and counting slow ones."""

    def __init__(self, manager: web.Server, *, refused: Refused, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._refused = refused
        self._partial = False  # bytes of a request whose headers are not complete arrived

    def data_received(self, data: bytes) -> None:
        before = self._request_count
        super().data_received(data)
        self._partial = self._request_count == before and bool(data)

    def _process_keepalive(self) -> None:
        waiting = self._partial and self._waiter is not None and not self._waiter.done()
        super()._process_keepalive()
        if waiting and self._force_close:
            log.debug("closed a connection that did not send its request's headers in time")
            self._refused("header_timeout")

    def handle_error(
        self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        too_large = isinstance(exc, LineTooLong) or "Too many headers" in str(exc)
        if too_large:
            status, reason = 431, "header_too_large"
            text = (f"the request line or a header is longer than {self.max_line_size} bytes, or there are more "
                    f"than {self.max_headers} headers: {exc.message}")
        else:
            status, reason = 400, "bad_request"
            text = f"malformed HTTP request: {exc.message}"
        self._refused(reason)
        log.debug("refused a request from %s: %s", request.remote, text)
        response = web.Response(
            status=status, text=json.dumps({"code": "invalid", "message": text}), content_type="application/json"
        )
        response.force_close()
        return response


class _Server(web.Server):
    def __init__(self, *args: Any, refused: Refused, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._refused = refused

    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, refused=self._refused, **self._kwargs)


class HardenedRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose connections have a header timeout and answer
    unparsable requests quietly; ``refused`` counts each refusal by reason."""

    def __init__(self, app: web.Application, *, header_timeout: float, refused: Refused, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=header_timeout, **kwargs)
        self._refused = refused

    async def _make_server(self) -> web.Server:
        # The application's own server, with its handler and request factory, but our connections.
        server = await super()._make_server()
        return _Server(
            server.request_handler, request_factory=server.request_factory, refused=self._refused, **self._kwargs
        )
