"""Who may see what in the console: the scoping of ``/query``, with one addition for loopback.

On a worker bound to a loopback address, a request without a credential is the local operator
and sees everything; anywhere else it needs one. A credential, when sent, is always checked
(even on loopback): the admin credential sees everything, a key's token only that key.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping

from sluice.streams.query_api import ADMIN, QueryApi, Refused
from sluice.wire import ACCESS_KEY, AUTHORIZATION


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or empty (every address)
        return False


class ConsoleAccess:
    """Names the caller of a console request: :data:`ADMIN` or one access key; :class:`Refused`."""

    def __init__(self, query_api: QueryApi, web_host: str) -> None:
        self._query_api = query_api
        self.token_required = not is_loopback(web_host)

    def caller(self, headers: Mapping[str, str]) -> str | None:
        """The caller of a request with these headers (401 or 403 as :class:`Refused`)."""
        authorization = headers.get(AUTHORIZATION)
        if not authorization and not self.token_required:
            return ADMIN
        return self._query_api.caller(authorization, headers.get(ACCESS_KEY))

    @staticmethod
    def admit(caller: str | None, key: str) -> None:
        """Refused (403) unless ``caller`` may read ``key``'s data."""
        if caller is not ADMIN and caller != key:
            raise Refused(403, "forbidden", f"the token of key {caller!r} may not read key {key!r}")

    @staticmethod
    def admin_only(caller: str | None, what: str) -> None:
        """Refused (403) unless ``caller`` is the admin."""
        if caller is not ADMIN:
            raise Refused(403, "forbidden", f"{what} needs the admin credential; the token of key {caller!r} "
                          "sees only that key's tenant row, metrics and logs")
