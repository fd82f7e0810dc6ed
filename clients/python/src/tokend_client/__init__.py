"""Python client for tokend, the credential broker daemon.

tokend holds API credentials on a host and hands local processes
ready-to-send HTTP headers over gRPC on a Unix socket::

    from tokend_client import Client

    client = Client()                      # $TOKEND_SOCKET or /run/tokend/tokend.sock
    headers = client.headers("search-bot", scopes=["SEARCH"])
    requests.post(url, headers=headers, json=body)

Errors are :class:`TokendError` subclasses named after the gRPC code tokend
answered with; ``str()`` is tokend's message, which says what to fix.
:mod:`tokend_client.glean` wires a credential into Glean's Python SDK and
into httpx (``pip install tokend-client[httpx]``).
"""

from ._client import (
    DEFAULT_SOCKET,
    DEFAULT_TIMEOUT,
    SOCKET_ENV,
    AsyncClient,
    AsyncWatch,
    Client,
    Watch,
    resolve_socket,
)
from ._errors import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NeedsLogin,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    TokendError,
    Unavailable,
)
from ._types import CredentialState, CredentialStatus, FleetMembership, Headers

try:
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("tokend-client")
except PackageNotFoundError:  # pragma: no cover - imported from a bare tree
    __version__ = "0+unknown"

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_TIMEOUT",
    "SOCKET_ENV",
    "AsyncClient",
    "AsyncWatch",
    "Client",
    "CredentialState",
    "CredentialStatus",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FleetMembership",
    "Headers",
    "Internal",
    "InvalidArgument",
    "NeedsLogin",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "TokendError",
    "Unavailable",
    "Watch",
    "__version__",
    "resolve_socket",
]
