"""Typed exceptions, one per gRPC code tokend answers with."""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc


class TokendError(Exception):
    """A call to tokend failed.

    ``str()`` is tokend's own message, written for a person (it names the
    credential and what to run or fix); tokend never puts a token in one.
    ``code`` is the gRPC status code, ``None`` when the failure happened on
    this side before any call was made.
    """

    code: Optional[grpc.StatusCode] = None

    def __init__(self, message: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return self.message


class NotFound(TokendError):
    """No credential has that name (or it was removed while watched)."""

    code = grpc.StatusCode.NOT_FOUND


class PermissionDenied(TokendError):
    """The caller, or the user it asked to act as, may not use the credential."""

    code = grpc.StatusCode.PERMISSION_DENIED


class InvalidArgument(TokendError):
    """The request is wrong: ``act_as`` missing for a global Glean token,
    given for any other, or not an email; an unknown scope."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class FailedPrecondition(TokendError):
    """The credential needs a person: it expired, lacks a required scope,
    expires within ``min_valid``, needs an import, a login or a config fix.
    Retrying will not help."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class NeedsLogin(FailedPrecondition):
    """An OAuth credential needs ``tokenctl login`` (no refresh token yet,
    or the grant was revoked)."""


class Unavailable(TokendError):
    """No token valid for ``min_valid`` yet (refreshing is failing or slow),
    tokend is shutting down, or the daemon cannot be reached. tokend keeps
    retrying; so may the caller."""

    code = grpc.StatusCode.UNAVAILABLE


class ResourceExhausted(TokendError):
    """A per-caller limit: too many watch streams, or reported tokens were
    replaced too often just now (the message says when to try again)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Internal(TokendError):
    """A fault inside tokend, not the caller's doing."""

    code = grpc.StatusCode.INTERNAL


class DeadlineExceeded(TokendError):
    """The call's deadline passed before tokend answered."""

    code = grpc.StatusCode.DEADLINE_EXCEEDED


_BY_CODE: Dict[grpc.StatusCode, Type[TokendError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        PermissionDenied,
        InvalidArgument,
        FailedPrecondition,
        Unavailable,
        ResourceExhausted,
        Internal,
        DeadlineExceeded,
    )
    if cls.code is not None
}

# How tokend words a credential that needs login: "credential `NAME` needs
# login: REASON".
_NEEDS_LOGIN = " needs login"


def error_for(code: grpc.StatusCode, details: Optional[str], socket: str) -> TokendError:
    """The exception for a call that ended with ``code`` and ``details``.

    ``details`` is kept verbatim when tokend sent it. A connection that
    never came up (grpc's own UNAVAILABLE) gets the socket named, so the
    message says where tokend was expected.
    """
    message = details or ""
    if code == grpc.StatusCode.UNAVAILABLE and "failed to connect" in message:
        message = f"cannot reach tokend at {socket} (is it running?): {message}"
    if not message:
        message = f"tokend answered {code.name} without a message"
    cls = _BY_CODE.get(code)
    if cls is FailedPrecondition and _NEEDS_LOGIN in message:
        cls = NeedsLogin
    if cls is None:
        return TokendError(message, code)
    return cls(message)


def from_rpc_error(error: grpc.RpcError, socket: str) -> TokendError:
    """The typed exception for a failed call of grpcio or grpc.aio."""
    code = error.code() if hasattr(error, "code") else grpc.StatusCode.UNKNOWN
    details = error.details() if hasattr(error, "details") else None
    return error_for(code, details, socket)
