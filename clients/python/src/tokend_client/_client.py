"""The blocking :class:`Client` and the asyncio :class:`AsyncClient`."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import timedelta
from typing import (
    Any,
    AsyncIterator,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import grpc
import grpc.aio
from google.protobuf import duration_pb2

from ._errors import from_rpc_error
from ._proto import tokend_pb2, tokend_pb2_grpc
from ._types import CredentialStatus, Headers, headers_from_proto, status_from_proto

log = logging.getLogger("tokend_client")

#: Where tokend listens unless told otherwise.
DEFAULT_SOCKET = "/run/tokend/tokend.sock"
#: The environment variable naming the socket, as for ``tokenctl``.
SOCKET_ENV = "TOKEND_SOCKET"
#: How long a call waits by default, in seconds: tokend's own default wait
#: for a refresh in flight. tokend answers UNAVAILABLE, with the refresh's
#: last error, a tenth of the deadline before it passes.
DEFAULT_TIMEOUT = 10.0

#: Seconds (``int`` or ``float``) or a ``timedelta``.
Duration = Union[int, float, timedelta]
#: A filesystem path to the socket.
SocketPath = Union[str, "os.PathLike[str]"]
ChannelOptions = Sequence[Tuple[str, Any]]


def resolve_socket(socket: Optional[SocketPath] = None) -> str:
    """The absolute path of tokend's socket: ``socket`` if given, else
    ``$TOKEND_SOCKET`` if set and not empty, else ``/run/tokend/tokend.sock``.
    A relative path is taken from the current directory, now."""
    if socket is None:
        socket = os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET
    path = os.fspath(socket)
    if not path:
        raise ValueError("the socket path is empty")
    return os.path.abspath(path)


def _channel_options(extra: ChannelOptions) -> List[Tuple[str, Any]]:
    # tokend rewrites grpc C-core's default authority (the socket path) on
    # its side too; this keeps older daemons working.
    return [("grpc.default_authority", "localhost"), *extra]


def _duration(value: Duration) -> duration_pb2.Duration:
    if isinstance(value, bool) or not isinstance(value, (int, float, timedelta)):
        raise TypeError(f"min_valid must be seconds or a timedelta, not {type(value).__name__}")
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not seconds >= 0:
        raise ValueError(f"min_valid must not be negative, got {seconds}s")
    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int(round((seconds - whole) * 1e9)))


def _request(
    credential: str,
    act_as: Optional[str],
    scopes: Iterable[str],
    min_valid: Optional[Duration],
) -> tokend_pb2.GetHeadersRequest:
    if not isinstance(credential, str):
        raise TypeError(f"credential must be a str, not {type(credential).__name__}")
    if isinstance(scopes, str):
        # A lone scope, not the letters of one.
        scopes = (scopes,)
    request = tokend_pb2.GetHeadersRequest(
        credential=credential, act_as=act_as or "", required_scopes=list(scopes)
    )
    if min_valid is not None:
        request.min_valid.CopyFrom(_duration(min_valid))
    return request


class Client:
    """A connection to tokend on its Unix socket; blocking calls.

    Cheap to share: one channel serves any number of threads. tokend knows
    the caller from the socket's peer credentials, so nothing here carries
    an identity. Every failed call raises a :class:`~tokend_client.TokendError`
    subclass whose ``str()`` is tokend's message.

    ``socket`` is resolved by :func:`resolve_socket`. ``timeout`` (seconds,
    ``None`` for none) bounds each call but :meth:`watch`.
    """

    def __init__(
        self,
        socket: Optional[SocketPath] = None,
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        options: ChannelOptions = (),
    ) -> None:
        self.socket = resolve_socket(socket)
        #: The gRPC target: ``unix:///abs/path``.
        self.target = f"unix://{self.socket}"
        self.timeout = timeout
        self._channel = grpc.insecure_channel(self.target, options=_channel_options(options))
        # The generated stub is untyped; each call below states its types.
        self._stub: Any = tokend_pb2_grpc.TokenBrokerStub(self._channel)  # type: ignore[no-untyped-call]

    @property
    def channel(self) -> grpc.Channel:
        """The underlying channel, for services this package does not wrap."""
        return self._channel

    def __repr__(self) -> str:
        return f"Client(socket={self.socket!r})"

    def close(self) -> None:
        """Closes the channel; watches end."""
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is None else timeout

    def headers(
        self,
        credential: str,
        act_as: Optional[str] = None,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Headers:
        """The headers to send with one API request using ``credential``.

        ``act_as``: the email to act as, for global Glean tokens only.
        ``scopes``: the Glean scopes about to be used (tokend refuses rather
        than hand out a token that would get a 403). ``min_valid``: how long
        the token must stay valid at least (seconds or a ``timedelta``); the
        credential's own ``min_valid`` is a floor. For OAuth credentials the
        call waits for a refresh in flight.

        Returns a :class:`Headers` dict; its ``fingerprint`` is what
        :meth:`invalidate` takes.
        """
        request = _request(credential, act_as, scopes, min_valid)
        try:
            response = self._stub.GetHeaders(request, timeout=self._timeout(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.socket) from e
        return headers_from_proto(response)

    def watch(
        self,
        credential: str,
        act_as: Optional[str] = None,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
    ) -> Watch:
        """The current headers, then new ones after every rotation, as an
        iterator (one :class:`Headers` per token) for long-lived callers.

        The iteration raises :class:`~tokend_client.FailedPrecondition`
        when the credential needs a person, :class:`~tokend_client.NotFound`
        when it is removed and :class:`~tokend_client.Unavailable` when the
        daemon stops; watch again (after a pause) to resume. ``close()``
        (or leaving a ``with`` block) ends it quietly.
        """
        request = _request(credential, act_as, scopes, min_valid)
        return Watch(self._stub.WatchHeaders(request), self.socket)

    def invalidate(
        self, credential: str, fingerprint: str, *, timeout: Optional[float] = None
    ) -> bool:
        """Reports that an API answered 401 to the token with ``fingerprint``
        (:attr:`Headers.fingerprint`), so tokend replaces it at once.

        ``True`` when a refresh started (or was already under way for that
        token): the next :meth:`headers` waits for it. ``False`` when the
        token was already replaced, or cannot be refreshed (a Glean token
        is rotated by a person).
        """
        request = tokend_pb2.InvalidateRequest(credential=credential, token_fingerprint=fingerprint)
        try:
            response = self._stub.Invalidate(request, timeout=self._timeout(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.socket) from e
        log.debug(
            "credential %s: reported token %s; refreshing: %s",
            credential,
            fingerprint,
            response.refreshing,
        )
        return bool(response.refreshing)

    def credentials(self, *, timeout: Optional[float] = None) -> List[CredentialStatus]:
        """Every credential the caller may use (all of them for an admin),
        with its state and expiry, as ``tokenctl status`` shows them."""
        try:
            response = self._stub.ListCredentials(
                tokend_pb2.ListCredentialsRequest(), timeout=self._timeout(timeout)
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.socket) from e
        return [status_from_proto(c) for c in response.credentials]


class Watch(Iterator[Headers]):
    """The iterator :meth:`Client.watch` returns: one :class:`Headers` per
    token. ``close()`` cancels the stream."""

    def __init__(self, call: Any, socket: str) -> None:
        self._call = call
        self._socket = socket
        self._closed = False

    def __iter__(self) -> Watch:
        return self

    def __next__(self) -> Headers:
        if self._closed:
            raise StopIteration
        try:
            response = next(self._call)
        except grpc.RpcError as e:
            if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                raise StopIteration from None
            raise from_rpc_error(e, self._socket) from e
        return headers_from_proto(response)

    def close(self) -> None:
        """Ends the watch; iterating further stops at once."""
        self._closed = True
        self._call.cancel()

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncClient:
    """:class:`Client`'s methods for asyncio, over ``grpc.aio``.

    The channel is made on first use, in the running event loop (and made
    again if a later call runs in another loop).
    """

    def __init__(
        self,
        socket: Optional[SocketPath] = None,
        *,
        timeout: Optional[float] = DEFAULT_TIMEOUT,
        options: ChannelOptions = (),
    ) -> None:
        self.socket = resolve_socket(socket)
        self.target = f"unix://{self.socket}"
        self.timeout = timeout
        self._options = _channel_options(options)
        self._channel: Optional[grpc.aio.Channel] = None
        self._stub: Any = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None

    def __repr__(self) -> str:
        return f"AsyncClient(socket={self.socket!r})"

    def _broker(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._channel is None or self._loop is not loop:
            self._channel = grpc.aio.insecure_channel(self.target, options=self._options)
            self._stub = tokend_pb2_grpc.TokenBrokerStub(self._channel)  # type: ignore[no-untyped-call]
            self._loop = loop
        return self._stub

    async def close(self) -> None:
        """Closes the channel; watches end."""
        if self._channel is not None:
            channel, self._channel = self._channel, None
            await channel.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _timeout(self, timeout: Optional[float]) -> Optional[float]:
        return self.timeout if timeout is None else timeout

    async def headers(
        self,
        credential: str,
        act_as: Optional[str] = None,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
        *,
        timeout: Optional[float] = None,
    ) -> Headers:
        """See :meth:`Client.headers`."""
        request = _request(credential, act_as, scopes, min_valid)
        try:
            response = await self._broker().GetHeaders(request, timeout=self._timeout(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.socket) from e
        return headers_from_proto(response)

    def watch(
        self,
        credential: str,
        act_as: Optional[str] = None,
        scopes: Iterable[str] = (),
        min_valid: Optional[Duration] = None,
    ) -> AsyncWatch:
        """See :meth:`Client.watch`; an async iterator (``async for``).
        Call it from inside the event loop."""
        request = _request(credential, act_as, scopes, min_valid)
        return AsyncWatch(self._broker().WatchHeaders(request), self.socket)

    async def invalidate(
        self, credential: str, fingerprint: str, *, timeout: Optional[float] = None
    ) -> bool:
        """See :meth:`Client.invalidate`."""
        request = tokend_pb2.InvalidateRequest(credential=credential, token_fingerprint=fingerprint)
        try:
            response = await self._broker().Invalidate(request, timeout=self._timeout(timeout))
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.socket) from e
        log.debug(
            "credential %s: reported token %s; refreshing: %s",
            credential,
            fingerprint,
            response.refreshing,
        )
        return bool(response.refreshing)

    async def credentials(self, *, timeout: Optional[float] = None) -> List[CredentialStatus]:
        """See :meth:`Client.credentials`."""
        try:
            response = await self._broker().ListCredentials(
                tokend_pb2.ListCredentialsRequest(), timeout=self._timeout(timeout)
            )
        except grpc.RpcError as e:
            raise from_rpc_error(e, self.socket) from e
        return [status_from_proto(c) for c in response.credentials]


class AsyncWatch(AsyncIterator[Headers]):
    """The async iterator :meth:`AsyncClient.watch` returns. ``close()``
    cancels the stream."""

    def __init__(self, call: Any, socket: str) -> None:
        self._call = call
        self._responses = call.__aiter__()
        self._socket = socket
        self._closed = False

    def __aiter__(self) -> AsyncWatch:
        return self

    async def __anext__(self) -> Headers:
        if self._closed:
            raise StopAsyncIteration
        try:
            response = await self._responses.__anext__()
        except grpc.RpcError as e:
            if self._closed and e.code() == grpc.StatusCode.CANCELLED:
                raise StopAsyncIteration from None
            raise from_rpc_error(e, self._socket) from e
        except asyncio.CancelledError:
            if self._closed:
                raise StopAsyncIteration from None
            raise
        return headers_from_proto(response)

    def close(self) -> None:
        """Ends the watch; iterating further stops at once."""
        self._closed = True
        self._call.cancel()

    async def __aenter__(self) -> AsyncWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()
