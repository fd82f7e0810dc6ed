"""What tokend answers with, as plain Python values."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Optional, Tuple

from ._proto import tokend_pb2


class Headers(Dict[str, str]):
    """The headers to send with one API request, name to value, in the
    order tokend gave them.

    A ``dict`` (``requests``, ``httpx`` and ``urllib`` take it as is) with
    what the call answered besides: ``fingerprint`` (names the token in
    :meth:`Client.invalidate` without sending it back), ``expires_at``
    (``None`` when the token does not expire) and ``stale``. Its ``repr()``
    and ``str()`` show header names only, so logging it leaks no token.
    """

    fingerprint: str
    expires_at: Optional[datetime]
    stale: bool

    def __init__(
        self,
        items: Iterable[Tuple[str, str]] = (),
        *,
        fingerprint: str = "",
        expires_at: Optional[datetime] = None,
        stale: bool = False,
    ) -> None:
        super().__init__(items)
        self.fingerprint = fingerprint
        self.expires_at = expires_at
        self.stale = stale

    def __repr__(self) -> str:
        expires = self.expires_at.isoformat() if self.expires_at else None
        return (
            f"Headers(names={list(self)!r}, fingerprint={self.fingerprint!r}, "
            f"expires_at={expires!r}, stale={self.stale!r})"
        )

    __str__ = __repr__


class CredentialState(enum.Enum):
    """A credential's state, as ``tokenctl status`` shows it."""

    UNSPECIFIED = "unspecified"
    #: A usable token is held.
    FRESH = "fresh"
    #: Being renewed; the current token is still served.
    REFRESHING = "refreshing"
    #: Renewal is failing; the current token is still valid.
    STALE = "stale"
    #: The token has expired and must be rotated or renewed.
    EXPIRED = "expired"
    #: A person must run ``tokenctl login``.
    NEEDS_LOGIN = "needs_login"
    #: The source refuses the client or its configuration.
    MISCONFIGURED = "misconfigured"

    @classmethod
    def _from_proto(cls, value: int) -> CredentialState:
        name = tokend_pb2.CredentialState.Name(value) if value in _STATE_NUMBERS else ""
        return cls.__members__.get(name.replace("CREDENTIAL_STATE_", ""), cls.UNSPECIFIED)


_STATE_NUMBERS = frozenset(tokend_pb2.CredentialState.values())


@dataclass(frozen=True)
class FleetMembership:
    """This host's place in the fleet for a shared credential (``shared =
    true``): one node of the fleet refreshes it, the others follow."""

    #: This node's name.
    node: str
    #: ``"leader"`` (this node refreshes the credential), ``"follower"`` or
    #: ``"unreachable"`` (etcd is).
    role: str
    #: The node that refreshes the credential; ``""`` when none is known.
    leader: str
    #: Since when etcd has been unreachable; ``None`` while it answers.
    unreachable_since: Optional[datetime]


@dataclass(frozen=True)
class CredentialStatus:
    """One credential the caller may use (every one, for an admin). Never
    carries a secret."""

    name: str
    #: The config's kind, e.g. ``"glean_token"`` or ``"oauth_refresh"``.
    kind: str
    #: For Glean tokens ``"user"``, ``"global"`` or ``"anonymous"``; else ``""``.
    permission: str
    state: CredentialState
    #: ``None`` when the token does not expire.
    expires_at: Optional[datetime]
    scopes: Tuple[str, ...]
    #: Who rotates it, from the config; ``""`` if unnamed.
    owner: str
    #: The last error a person should know about; ``""`` when healthy.
    last_error: str
    last_refresh: Optional[datetime]
    next_refresh: Optional[datetime]
    #: The Glean instance the credential is for; ``""`` if not configured.
    instance: str
    #: For a shared credential, this host's place in the fleet; else ``None``.
    fleet: Optional[FleetMembership] = None


def timestamp(message: Any, field: str) -> Optional[datetime]:
    """A Timestamp field as an aware UTC datetime; ``None`` when absent."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    return datetime.fromtimestamp(value.seconds, tz=timezone.utc).replace(
        microsecond=value.nanos // 1000
    )


def headers_from_proto(response: tokend_pb2.GetHeadersResponse) -> Headers:
    """The :class:`Headers` of one GetHeaders/WatchHeaders answer."""
    return Headers(
        ((h.name, h.value) for h in response.headers),
        fingerprint=response.token_fingerprint,
        expires_at=timestamp(response, "expires_at"),
        stale=response.stale,
    )


def status_from_proto(status: tokend_pb2.CredentialStatus) -> CredentialStatus:
    """The :class:`CredentialStatus` of one ListCredentials entry."""
    return CredentialStatus(
        name=status.name,
        kind=status.kind,
        permission=status.permission,
        state=CredentialState._from_proto(status.state),
        expires_at=timestamp(status, "expires_at"),
        scopes=tuple(status.scopes),
        owner=status.owner,
        last_error=status.last_error,
        last_refresh=timestamp(status, "last_refresh"),
        next_refresh=timestamp(status, "next_refresh"),
        instance=status.instance,
        fleet=(
            FleetMembership(
                node=status.fleet.node,
                role=status.fleet.role,
                leader=status.fleet.leader,
                unreachable_since=timestamp(status.fleet, "unreachable_since"),
            )
            if status.HasField("fleet")
            else None
        ),
    )
