"""tokend's credentials in Glean's Python SDK (``glean-api-client``) and in
httpx.

With a user (or anonymous) Glean token, the SDK's own token callable is
enough::

    from glean.api_client import Glean
    from tokend_client.glean import api_token

    glean = Glean(api_token=api_token("search-bot"), instance="acme")

Global tokens (``X-Glean-ActAs``), OAuth credentials (``X-Glean-Auth-Type``)
and a retry after a 401 need every header tokend gives, which the SDK's
``api_token`` cannot carry: hand it an httpx client instead (``pip install
tokend-client[httpx]``)::

    glean = Glean(client=httpx_client("support-bot", act_as="alice@corp.example"),
                  instance="acme")
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Optional

from ._client import Client, Duration
from ._types import Headers

if TYPE_CHECKING:  # pragma: no cover
    import httpx

    from ._client import AsyncClient
    from ._httpx_auth import AsyncTokendAuth, TokendAuth

__all__ = [
    "ApiToken",
    "api_token",
    "async_httpx_auth",
    "async_httpx_client",
    "httpx_auth",
    "httpx_client",
]

_INSTALL_HTTPX = (
    "tokend_client.glean's httpx helpers need httpx: pip install 'tokend-client[httpx]'"
)


class ApiToken:
    """A zero-argument callable returning the credential's bearer token
    (without ``Bearer``), fetched from tokend on every call: what
    ``Glean(api_token=...)`` takes.

    Refuses (``ValueError``) a credential whose headers are more than
    ``Authorization: Bearer``, since the SDK would drop the rest. After the
    API answered 401, :meth:`invalidate` reports the last token handed out.
    """

    def __init__(
        self,
        credential: str,
        client: Optional[Client] = None,
        *,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
    ) -> None:
        self.credential = credential
        self._scopes = (scopes,) if isinstance(scopes, str) else tuple(scopes)
        self._min_valid = min_valid
        self._client = client if client is not None else Client()
        #: The last headers fetched; their ``fingerprint`` names the token.
        self.last: Optional[Headers] = None

    def __repr__(self) -> str:
        return f"ApiToken(credential={self.credential!r}, socket={self._client.socket!r})"

    def __call__(self) -> str:
        headers = self._client.headers(
            self.credential, scopes=self._scopes, min_valid=self._min_valid
        )
        others = [name for name in headers if name.lower() != "authorization"]
        if others:
            raise ValueError(
                f"credential `{self.credential}` needs headers besides Authorization "
                f"({', '.join(others)}), which Glean(api_token=...) cannot send; "
                "use Glean(client=tokend_client.glean.httpx_client(...)) instead"
            )
        value = next((v for n, v in headers.items() if n.lower() == "authorization"), "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise ValueError(
                f"credential `{self.credential}`: tokend's Authorization header is not "
                "a Bearer token"
            )
        self.last = headers
        return token.strip()

    def invalidate(self) -> bool:
        """Reports the last token handed out as rejected (the API answered
        401), so tokend replaces it; the next call gets the new one. See
        :meth:`Client.invalidate`. ``False`` if none was handed out yet."""
        if self.last is None:
            return False
        return self._client.invalidate(self.credential, self.last.fingerprint)


def api_token(
    credential: str,
    client: Optional[Client] = None,
    **kw: Any,
) -> ApiToken:
    """The callable ``Glean(api_token=...)`` takes, for ``credential``.

    ``client`` is the tokend :class:`~tokend_client.Client` to use (a new one
    on ``$TOKEND_SOCKET`` by default); ``kw`` (``scopes``, ``min_valid``) go
    to every :meth:`~tokend_client.Client.headers` call. ``act_as`` is
    refused: the SDK would not send ``X-Glean-ActAs``, use
    :func:`httpx_client`.
    """
    if kw.get("act_as"):
        raise ValueError(
            "api_token cannot act as another user: Glean(api_token=...) sends only "
            "Authorization; use Glean(client=tokend_client.glean.httpx_client("
            f"{credential!r}, act_as=...))"
        )
    kw.pop("act_as", None)
    return ApiToken(credential, client, **kw)


def httpx_auth(
    credential: str,
    act_as: Optional[str] = None,
    client: Optional[Client] = None,
    *,
    scopes: Iterable[str] = (),
    min_valid: Optional[Duration] = None,
) -> TokendAuth:
    """An ``httpx.Auth`` setting every header tokend returns for
    ``credential`` on each request, and on a 401 reporting the token to
    tokend and retrying once with its replacement. For ``httpx.Client``."""
    try:
        from ._httpx_auth import TokendAuth
    except ImportError as e:
        raise ImportError(_INSTALL_HTTPX) from e
    return TokendAuth(credential, act_as, client, scopes=scopes, min_valid=min_valid)


def httpx_client(
    credential: str,
    act_as: Optional[str] = None,
    *,
    client: Optional[Client] = None,
    scopes: Iterable[str] = (),
    min_valid: Optional[Duration] = None,
    **httpx_kwargs: Any,
) -> httpx.Client:
    """An ``httpx.Client(auth=httpx_auth(...), **httpx_kwargs)``: hand it to
    ``Glean(client=...)`` or use it directly."""
    try:
        import httpx
    except ImportError as e:
        raise ImportError(_INSTALL_HTTPX) from e
    auth = httpx_auth(credential, act_as, client, scopes=scopes, min_valid=min_valid)
    return httpx.Client(auth=auth, **httpx_kwargs)


def async_httpx_auth(
    credential: str,
    act_as: Optional[str] = None,
    client: Optional[AsyncClient] = None,
    *,
    scopes: Iterable[str] = (),
    min_valid: Optional[Duration] = None,
) -> AsyncTokendAuth:
    """:func:`httpx_auth` for ``httpx.AsyncClient``, over an
    :class:`~tokend_client.AsyncClient`."""
    try:
        from ._httpx_auth import AsyncTokendAuth
    except ImportError as e:
        raise ImportError(_INSTALL_HTTPX) from e
    return AsyncTokendAuth(credential, act_as, client, scopes=scopes, min_valid=min_valid)


def async_httpx_client(
    credential: str,
    act_as: Optional[str] = None,
    *,
    client: Optional[AsyncClient] = None,
    scopes: Iterable[str] = (),
    min_valid: Optional[Duration] = None,
    **httpx_kwargs: Any,
) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient(auth=async_httpx_auth(...), **httpx_kwargs)``,
    for ``Glean(async_client=...)``."""
    try:
        import httpx
    except ImportError as e:
        raise ImportError(_INSTALL_HTTPX) from e
    auth = async_httpx_auth(credential, act_as, client, scopes=scopes, min_valid=min_valid)
    return httpx.AsyncClient(auth=auth, **httpx_kwargs)
