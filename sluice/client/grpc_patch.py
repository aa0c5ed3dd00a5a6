"""Keep the status a server ends a client stream with (grpc/grpc#36066, fix proposed in #43486).

When a server ends a client-streaming call early (``context.abort`` mid-stream, as the gateway
does with ``x-accepted``), a client write racing with the end fails, and grpcio's asyncio client
then overwrites the server's status with ``INTERNAL: Internal error from Core``, dropping its
code and trailers: the client could no longer tell what was stored. This replaces
``_StreamRequestMixin._write`` with a copy that, when a write fails *asynchronously* (Core has
the call's status coming), waits for that status instead of inventing one; a write refused
synchronously keeps grpcio's behaviour. :func:`install` is idempotent and does nothing when
grpcio's internals are not the expected ones.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

# How long a failed write waits for the status Core delivers before falling back to INTERNAL.
STATUS_WAIT = 5.0

_installed = False


def install() -> bool:
    """Patch grpcio once; True when the patch is in place."""
    global _installed
    if _installed:
        return True
    try:
        from grpc._cython import cygrpc
        from grpc.aio import _call
    except ImportError:  # pragma: no cover - layout of another grpcio
        return False
    mixin: Any = getattr(_call, "_StreamRequestMixin", None)
    needed = ("_RPC_ALREADY_FINISHED_DETAILS", "_RPC_HALF_CLOSED_DETAILS", "_common")
    if (
        not hasattr(mixin, "_write")
        or not hasattr(cygrpc, "InternalError")
        or not all(hasattr(_call, name) for name in needed)
    ):  # pragma: no cover
        log.debug("grpcio internals differ; stream status patch not installed")
        return False

    async def _write(self: Any, request: Any) -> None:
        if self.done():
            raise asyncio.InvalidStateError(_call._RPC_ALREADY_FINISHED_DETAILS)
        if self._done_writing_flag:
            raise asyncio.InvalidStateError(_call._RPC_HALF_CLOSED_DETAILS)
        if not self._metadata_sent.is_set():
            await self._metadata_sent.wait()
            if self.done():
                await self._raise_for_status()
        serialized = _call._common.serialize(request, self._request_serializer)
        try:
            await self._cython_call.send_serialized_message(serialized)
        except cygrpc.InternalError as err:
            if '"execute_batch"' in str(err):  # the op failed in Core: the call's status follows
                try:
                    await asyncio.wait_for(asyncio.shield(self._cython_call.status()), STATUS_WAIT)
                except TimeoutError:
                    self._cython_call.set_internal_error(str(err))
            else:
                self._cython_call.set_internal_error(str(err))
            await self._raise_for_status()
        except asyncio.CancelledError:
            if not self.cancelled():
                self.cancel()
            raise

    mixin._write = _write
    _installed = True
    return True
