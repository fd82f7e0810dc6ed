"""Each gRPC code tokend answers with raises its own exception, whose str()
is tokend's message, from every method."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Type

import grpc
import pytest
from fake_tokend import FakeBroker

import tokend_client
from tokend_client import (
    AsyncClient,
    Client,
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

MAPPING = [
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.PERMISSION_DENIED, PermissionDenied),
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument),
    (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition),
    (grpc.StatusCode.UNAVAILABLE, Unavailable),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    (grpc.StatusCode.INTERNAL, Internal),
]

MESSAGE = (
    "uid 1000 (gid 1000, pid 4242) may not use credential `search-bot`; add the uid or "
    "one of its groups to the credential's `allow` in tokend's config"
)


@pytest.mark.parametrize("code,cls", MAPPING, ids=[c.name for c, _ in MAPPING])
def test_each_code_raises_its_class_with_tokends_message(
    broker: FakeBroker, client: Client, code: grpc.StatusCode, cls: Type[TokendError]
) -> None:
    broker.errors["search-bot"] = (code, MESSAGE)
    with pytest.raises(TokendError) as raised:
        client.headers("search-bot")
    assert type(raised.value) is cls
    assert str(raised.value) == MESSAGE
    assert raised.value.message == MESSAGE
    assert raised.value.code == code


def test_every_class_is_exported_and_a_tokend_error() -> None:
    for _, cls in MAPPING:
        assert getattr(tokend_client, cls.__name__) is cls
        assert issubclass(cls, TokendError)
    assert issubclass(NeedsLogin, FailedPrecondition)


def test_needs_login_is_told_apart_by_tokends_wording(broker: FakeBroker, client: Client) -> None:
    broker.errors["sso"] = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "credential `sso` needs login: no refresh token yet; run `tokenctl login sso`",
    )
    broker.errors["expired"] = (
        grpc.StatusCode.FAILED_PRECONDITION,
        "credential `expired` expired at 2026-01-01T00:00:00Z (3d ago); it must be rotated",
    )
    with pytest.raises(NeedsLogin, match="run `tokenctl login sso`"):
        client.headers("sso")
    with pytest.raises(FailedPrecondition) as raised:
        client.headers("expired")
    assert not isinstance(raised.value, NeedsLogin)


def test_a_code_tokend_does_not_use_is_still_a_tokend_error(
    broker: FakeBroker, client: Client
) -> None:
    broker.errors["x"] = (grpc.StatusCode.ALREADY_EXISTS, "odd")
    with pytest.raises(TokendError) as raised:
        client.headers("x")
    assert type(raised.value) is TokendError
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert str(raised.value) == "odd"


def test_a_slow_answer_is_deadline_exceeded(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("search-bot", "t")
    broker.delay = 1.0
    with pytest.raises(DeadlineExceeded):
        client.headers("search-bot", timeout=0.1)


def test_invalidate_credentials_and_watch_map_errors_too(
    broker: FakeBroker, client: Client
) -> None:
    broker.invalidate_errors["oauth"] = (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "credential `oauth`: reported tokens were replaced several times just now",
    )
    with pytest.raises(ResourceExhausted, match="replaced several times"):
        client.invalidate("oauth", "0123456789abcdef")

    broker.list_error = (grpc.StatusCode.INTERNAL, "internal error: store")
    with pytest.raises(Internal, match="^internal error: store$"):
        client.credentials()

    broker.watch_queue("gone").put((grpc.StatusCode.NOT_FOUND, "credential `gone` was removed"))
    with pytest.raises(NotFound, match="^credential `gone` was removed$"):
        next(client.watch("gone"))


def test_the_async_client_maps_errors_the_same_way(broker: FakeBroker) -> None:
    broker.errors["sso"] = (grpc.StatusCode.FAILED_PRECONDITION, "credential `sso` needs login: x")
    broker.errors["nope"] = (grpc.StatusCode.PERMISSION_DENIED, MESSAGE)

    async def main() -> None:
        async with AsyncClient(broker.socket, timeout=5) as client:
            with pytest.raises(NeedsLogin):
                await client.headers("sso")
            with pytest.raises(PermissionDenied) as raised:
                await client.headers("nope")
            assert str(raised.value) == MESSAGE

    asyncio.run(main())


@pytest.mark.parametrize(
    "min_valid,seconds,nanos",
    [(90, 90, 0), (1.5, 1, 500_000_000), (timedelta(minutes=5), 300, 0), (0, 0, 0)],
)
def test_min_valid_is_sent_as_a_duration(
    broker: FakeBroker, client: Client, min_valid: object, seconds: int, nanos: int
) -> None:
    broker.set_tokens("search-bot", "t")
    client.headers("search-bot", min_valid=min_valid)  # type: ignore[arg-type]
    sent = broker.requests[-1]
    assert sent.HasField("min_valid")
    assert (sent.min_valid.seconds, sent.min_valid.nanos) == (seconds, nanos)


def test_no_min_valid_sends_none_and_scopes_are_sent(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("search-bot", "t")
    client.headers("search-bot", scopes=["SEARCH", "CHAT"])
    client.headers("search-bot", scopes="SEARCH")
    first, second = broker.requests[-2:]
    assert not first.HasField("min_valid")
    assert list(first.required_scopes) == ["SEARCH", "CHAT"]
    # A lone string is one scope, not its letters.
    assert list(second.required_scopes) == ["SEARCH"]


@pytest.mark.parametrize("bad,error", [(-1, ValueError), (True, TypeError), ("5m", TypeError)])
def test_a_bad_min_valid_is_refused_before_any_call(
    broker: FakeBroker, client: Client, bad: object, error: Type[Exception]
) -> None:
    with pytest.raises(error):
        client.headers("search-bot", min_valid=bad)  # type: ignore[arg-type]
    assert broker.requests == []
