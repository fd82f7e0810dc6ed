"""A fake tokend for the unit tests: the generated TokenBroker servicer,
scripted per test (conftest.py serves it on a Unix socket)."""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from typing import Dict, List, Optional, Tuple, Union

import grpc

from tokend_client._proto import tokend_pb2, tokend_pb2_grpc

#: The secret every fake token carries: it may reach a caller asking for
#: headers, never a log line or an exception.
CANARY = "glean_CANARY_5c1e9a7d0b3f"

EXPIRES_AT = 1_900_000_000  # 2030-03-17T17:46:40Z

Error = Tuple[grpc.StatusCode, str]
WatchItem = Union[tokend_pb2.GetHeadersResponse, Error, None]


def fingerprint(token: str) -> str:
    """tokend's fingerprint: the first 16 hex digits of the token's SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


class FakeBroker(tokend_pb2_grpc.TokenBrokerServicer):
    """TokenBroker as a test scripts it.

    ``tokens[credential]`` is the credential's token history: the first is
    served; Invalidate of its fingerprint moves on to the next when there is
    one (answering ``refreshing``), as tokend replaces a rejected token.
    """

    def __init__(self, socket: str) -> None:
        self.socket = socket
        self.lock = threading.Lock()
        self.tokens: Dict[str, List[str]] = {}
        self.extra_headers: Dict[str, List[Tuple[str, str]]] = {}
        self.expires: Dict[str, Optional[int]] = {}
        self.errors: Dict[str, Error] = {}
        self.invalidate_errors: Dict[str, Error] = {}
        # A daemon that still serves the reported token this long after
        # Invalidate (tokend before it waited for the replacement).
        self.replace_after = 0.0
        self.delay = 0.0
        self.requests: List[tokend_pb2.GetHeadersRequest] = []
        self.invalidated: List[Tuple[str, str]] = []
        self.statuses: List[tokend_pb2.CredentialStatus] = []
        self.list_error: Optional[Error] = None
        self.watches: Dict[str, "queue.Queue[WatchItem]"] = {}
        self.watch_cancelled = threading.Event()

    def set_tokens(
        self, credential: str, *tokens: str, expires_at: Optional[int] = EXPIRES_AT
    ) -> None:
        with self.lock:
            self.tokens[credential] = list(tokens)
            self.expires[credential] = expires_at

    def response(self, credential: str, act_as: str = "") -> tokend_pb2.GetHeadersResponse:
        """The answer for ``credential``'s current token."""
        with self.lock:
            token = self.tokens[credential][0]
            expires_at = self.expires.get(credential, EXPIRES_AT)
            extra = list(self.extra_headers.get(credential, []))
        response = tokend_pb2.GetHeadersResponse(token_fingerprint=fingerprint(token))
        response.headers.add(name="Authorization", value=f"Bearer {token}")
        if act_as:
            response.headers.add(name="X-Glean-ActAs", value=act_as)
        for name, value in extra:
            response.headers.add(name=name, value=value)
        if expires_at is not None:
            response.expires_at.seconds = expires_at
        return response

    def watch_queue(self, credential: str) -> "queue.Queue[WatchItem]":
        with self.lock:
            return self.watches.setdefault(credential, queue.Queue())

    # The servicer's methods.

    def GetHeaders(self, request, context):  # noqa: N802 - the RPC's name
        with self.lock:
            self.requests.append(request)
            error = self.errors.get(request.credential)
        if self.delay:
            time.sleep(self.delay)
        if error:
            context.abort(*error)
        if request.credential not in self.tokens:
            context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no credential named `{request.credential}` is configured",
            )
        return self.response(request.credential, request.act_as)

    def WatchHeaders(self, request, context):  # noqa: N802
        with self.lock:
            self.requests.append(request)
        q = self.watch_queue(request.credential)
        # Fires when the RPC ends however it ends; in the tests that close a
        # watch, the server never ends it itself.
        context.add_callback(self.watch_cancelled.set)
        while True:
            try:
                item = q.get(timeout=0.05)
            except queue.Empty:
                if not context.is_active():
                    return
                continue
            if item is None:
                return
            if isinstance(item, tuple):
                context.abort(*item)
            yield item

    def Invalidate(self, request, context):  # noqa: N802
        with self.lock:
            self.invalidated.append((request.credential, request.token_fingerprint))
            error = self.invalidate_errors.get(request.credential)
            tokens = self.tokens.get(request.credential, [])
        if error:
            context.abort(*error)
        current = fingerprint(tokens[0]) if tokens else None
        if current != request.token_fingerprint or len(tokens) < 2:
            return tokend_pb2.InvalidateResponse(refreshing=False)

        def replace() -> None:
            with self.lock:
                self.tokens[request.credential].pop(0)

        if self.replace_after:
            threading.Timer(self.replace_after, replace).start()
        else:
            replace()
        return tokend_pb2.InvalidateResponse(refreshing=True)

    def ListCredentials(self, request, context):  # noqa: N802
        if self.list_error:
            context.abort(*self.list_error)
        return tokend_pb2.ListCredentialsResponse(credentials=self.statuses)
