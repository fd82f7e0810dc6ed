"""httpx authentication with tokend's headers, and one retry on a 401.

Imported only when used, so the rest of the package works without httpx.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncGenerator, Generator, Iterable, Optional, Tuple

import httpx

from ._client import AsyncClient, Client, Duration
from ._types import Headers

log = logging.getLogger("tokend_client")

# After a report tokend starts a refresh; a daemon that still serves the
# reported token until the new one lands is polled this long, this often.
_REPLACEMENT_WAIT = 5.0
_REPLACEMENT_POLL = 0.05


def _apply(request: httpx.Request, headers: Headers) -> None:
    for name, value in headers.items():
        request.headers[name] = value


class _Settings:
    """What every fetch of the credential's headers asks for."""

    def __init__(
        self,
        credential: str,
        act_as: Optional[str],
        scopes: Iterable[str],
        min_valid: Optional[Duration],
    ) -> None:
        self.credential = credential
        self.act_as = act_as
        self.scopes: Tuple[str, ...] = (scopes,) if isinstance(scopes, str) else tuple(scopes)
        self.min_valid = min_valid

    def describe(self) -> str:
        act_as = f", act_as={self.act_as!r}" if self.act_as else ""
        return f"credential={self.credential!r}{act_as}"


def _not_retried(credential: str, fingerprint: str) -> None:
    log.warning(
        "credential %s: the API answered 401 to token %s and tokend has no other; "
        "returning the 401 (a person must rotate it: `tokenctl check %s`)",
        credential,
        fingerprint,
        credential,
    )


class TokendAuth(httpx.Auth):
    """Sets every header tokend returns for a credential on each request of
    an ``httpx.Client``.

    On a 401 it reports the token to tokend (:meth:`Client.invalidate`, by
    fingerprint), fetches the replacement and sends the request once more;
    when tokend has no other token (a Glean token waits for a person) the
    401 is returned as is. Errors from tokend raise its typed exceptions.
    """

    requires_request_body = True

    def __init__(
        self,
        credential: str,
        act_as: Optional[str] = None,
        client: Optional[Client] = None,
        *,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
    ) -> None:
        self._settings = _Settings(credential, act_as, scopes, min_valid)
        self._client = client if client is not None else Client()

    def __repr__(self) -> str:
        return f"TokendAuth({self._settings.describe()}, socket={self._client.socket!r})"

    def _fetch(self) -> Headers:
        s = self._settings
        return self._client.headers(s.credential, s.act_as, s.scopes, s.min_valid)

    def _replacement(self, rejected: Headers) -> Optional[Headers]:
        credential = self._settings.credential
        refreshing = self._client.invalidate(credential, rejected.fingerprint)
        fresh = self._fetch()
        deadline = time.monotonic() + _REPLACEMENT_WAIT
        while refreshing and fresh.fingerprint == rejected.fingerprint:
            if time.monotonic() >= deadline:
                break
            time.sleep(_REPLACEMENT_POLL)
            fresh = self._fetch()
        if fresh.fingerprint == rejected.fingerprint:
            _not_retried(credential, rejected.fingerprint)
            return None
        log.info(
            "credential %s: the API answered 401 to token %s; retrying once with token %s",
            credential,
            rejected.fingerprint,
            fresh.fingerprint,
        )
        return fresh

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        headers = self._fetch()
        _apply(request, headers)
        response = yield request
        if response.status_code != 401:
            return
        fresh = self._replacement(headers)
        if fresh is not None:
            _apply(request, fresh)
            yield request

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        raise RuntimeError(
            "TokendAuth makes blocking calls and is for httpx.Client; "
            "use tokend_client.glean.async_httpx_auth with httpx.AsyncClient"
        )
        yield request  # pragma: no cover - makes this an async generator


class AsyncTokendAuth(httpx.Auth):
    """:class:`TokendAuth` for ``httpx.AsyncClient``, over an
    :class:`AsyncClient`."""

    requires_request_body = True

    def __init__(
        self,
        credential: str,
        act_as: Optional[str] = None,
        client: Optional[AsyncClient] = None,
        *,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
    ) -> None:
        self._settings = _Settings(credential, act_as, scopes, min_valid)
        self._client = client if client is not None else AsyncClient()

    def __repr__(self) -> str:
        return f"AsyncTokendAuth({self._settings.describe()}, socket={self._client.socket!r})"

    async def _fetch(self) -> Headers:
        s = self._settings
        return await self._client.headers(s.credential, s.act_as, s.scopes, s.min_valid)

    async def _replacement(self, rejected: Headers) -> Optional[Headers]:
        credential = self._settings.credential
        refreshing = await self._client.invalidate(credential, rejected.fingerprint)
        fresh = await self._fetch()
        deadline = time.monotonic() + _REPLACEMENT_WAIT
        while refreshing and fresh.fingerprint == rejected.fingerprint:
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(_REPLACEMENT_POLL)
            fresh = await self._fetch()
        if fresh.fingerprint == rejected.fingerprint:
            _not_retried(credential, rejected.fingerprint)
            return None
        log.info(
            "credential %s: the API answered 401 to token %s; retrying once with token %s",
            credential,
            rejected.fingerprint,
            fresh.fingerprint,
        )
        return fresh

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError(
            "AsyncTokendAuth is for httpx.AsyncClient; "
            "use tokend_client.glean.httpx_auth with httpx.Client"
        )
        yield request  # pragma: no cover - makes this a generator

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        headers = await self._fetch()
        _apply(request, headers)
        response = yield request
        if response.status_code != 401:
            return
        fresh = await self._replacement(headers)
        if fresh is not None:
            _apply(request, fresh)
            yield request
