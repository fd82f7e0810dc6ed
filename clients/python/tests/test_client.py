"""Client against a fake tokend: headers, watch, invalidate, credentials."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import grpc
import pytest
from fake_tokend import CANARY, EXPIRES_AT, FakeBroker, fingerprint

from tokend_client import (
    Client,
    CredentialState,
    CredentialStatus,
    FailedPrecondition,
    FleetMembership,
    Headers,
    NeedsLogin,
)
from tokend_client._proto import tokend_pb2


def test_headers_are_a_dict_with_fingerprint_and_expiry(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("search-bot", CANARY)
    headers = client.headers("search-bot")
    assert isinstance(headers, dict) and isinstance(headers, Headers)
    assert headers == {"Authorization": f"Bearer {CANARY}"}
    assert headers.fingerprint == fingerprint(CANARY)
    assert headers.expires_at == datetime.fromtimestamp(EXPIRES_AT, tz=timezone.utc)
    assert headers.expires_at.tzinfo is not None
    assert headers.stale is False


def test_act_as_is_sent_and_its_header_kept_in_order(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("global-bot", "tok")
    headers = client.headers("global-bot", act_as="alice@corp.example")
    assert broker.requests[-1].act_as == "alice@corp.example"
    assert list(headers.items()) == [
        ("Authorization", "Bearer tok"),
        ("X-Glean-ActAs", "alice@corp.example"),
    ]


def test_a_token_without_expiry_has_none(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("forever", "tok", expires_at=None)
    assert client.headers("forever").expires_at is None


def test_headers_show_names_only(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("search-bot", CANARY)
    headers = client.headers("search-bot")
    for text in (repr(headers), str(headers), f"{headers}"):
        assert CANARY not in text
        assert "Authorization" in text and headers.fingerprint in text


def test_invalidate_answers_whether_a_refresh_started(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("oauth", "old", "new")
    old = client.headers("oauth")
    assert client.invalidate("oauth", old.fingerprint) is True
    assert broker.invalidated == [("oauth", fingerprint("old"))]
    new = client.headers("oauth")
    assert new.fingerprint == fingerprint("new")
    # The token was already replaced: nothing to do.
    assert client.invalidate("oauth", old.fingerprint) is False


def test_credentials_are_dataclasses_with_every_field(broker: FakeBroker, client: Client) -> None:
    fresh = tokend_pb2.CredentialStatus(
        name="search-bot",
        kind="glean_token",
        permission="user",
        state=tokend_pb2.CREDENTIAL_STATE_FRESH,
        scopes=["SEARCH", "CHAT"],
        owner="team@corp.example",
        instance="https://acme-be.glean.com",
    )
    fresh.expires_at.seconds = EXPIRES_AT
    sso = tokend_pb2.CredentialStatus(
        name="sso",
        kind="oauth_refresh",
        state=tokend_pb2.CREDENTIAL_STATE_NEEDS_LOGIN,
        last_error="no refresh token yet; run `tokenctl login sso`",
    )
    sso.last_refresh.seconds = EXPIRES_AT - 60
    sso.next_refresh.seconds = EXPIRES_AT + 60
    sso.fleet.node = "host-b"
    sso.fleet.role = "unreachable"
    sso.fleet.leader = "host-a"
    sso.fleet.unreachable_since.seconds = EXPIRES_AT - 30
    odd = tokend_pb2.CredentialStatus(name="odd", state=99)  # a state from a newer tokend
    broker.statuses = [fresh, sso, odd]

    got = client.credentials()

    assert [c.name for c in got] == ["search-bot", "sso", "odd"]
    assert all(isinstance(c, CredentialStatus) for c in got)
    bot, login, newer = got
    assert bot.kind == "glean_token" and bot.permission == "user"
    assert bot.state is CredentialState.FRESH
    assert bot.scopes == ("SEARCH", "CHAT")
    assert bot.owner == "team@corp.example"
    assert bot.instance == "https://acme-be.glean.com"
    assert bot.expires_at == datetime.fromtimestamp(EXPIRES_AT, tz=timezone.utc)
    assert bot.last_refresh is None and bot.next_refresh is None and bot.last_error == ""
    assert login.state is CredentialState.NEEDS_LOGIN and login.expires_at is None
    assert login.last_error.endswith("`tokenctl login sso`")
    assert login.last_refresh == datetime.fromtimestamp(EXPIRES_AT - 60, tz=timezone.utc)
    assert login.next_refresh == datetime.fromtimestamp(EXPIRES_AT + 60, tz=timezone.utc)
    assert newer.state is CredentialState.UNSPECIFIED
    # A shared credential carries this host's place in the fleet; others none.
    assert bot.fleet is None and newer.fleet is None
    assert login.fleet == FleetMembership(
        node="host-b",
        role="unreachable",
        leader="host-a",
        unreachable_since=datetime.fromtimestamp(EXPIRES_AT - 30, tz=timezone.utc),
    )


def test_watch_yields_a_header_set_per_rotation_then_raises_the_end(
    broker: FakeBroker, client: Client
) -> None:
    broker.set_tokens("rotating", "first")
    q = broker.watch_queue("rotating")
    q.put(broker.response("rotating"))
    watch = client.watch("rotating")
    first = next(watch)
    assert first == {"Authorization": "Bearer first"}
    assert broker.requests[-1].credential == "rotating"

    broker.set_tokens("rotating", "second")
    q.put(broker.response("rotating"))
    second = next(watch)
    assert second == {"Authorization": "Bearer second"}
    assert second.fingerprint == fingerprint("second") != first.fingerprint

    q.put((grpc.StatusCode.FAILED_PRECONDITION, "credential `rotating` needs login: revoked"))
    with pytest.raises(NeedsLogin):
        next(watch)


def test_watch_is_a_plain_iterator_that_ends_with_the_stream(
    broker: FakeBroker, client: Client
) -> None:
    broker.set_tokens("rotating", "a")
    q = broker.watch_queue("rotating")
    for token in ("a", "b", "c"):
        broker.set_tokens("rotating", token)
        q.put(broker.response("rotating"))
    q.put(None)
    assert [h["Authorization"] for h in client.watch("rotating")] == [
        "Bearer a",
        "Bearer b",
        "Bearer c",
    ]


def test_closing_a_watch_cancels_the_stream(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("rotating", "a")
    broker.watch_queue("rotating").put(broker.response("rotating"))
    with client.watch("rotating") as watch:
        assert next(watch)["Authorization"] == "Bearer a"
    assert broker.watch_cancelled.wait(5), "the server never saw the cancellation"
    with pytest.raises(StopIteration):
        next(watch)


def test_close_from_another_thread_ends_a_blocked_iteration(
    broker: FakeBroker, client: Client
) -> None:
    broker.set_tokens("rotating", "a")
    broker.watch_queue("rotating").put(broker.response("rotating"))
    watch = client.watch("rotating")
    got = []
    done = threading.Event()

    def consume() -> None:
        got.extend(watch)
        done.set()

    threading.Thread(target=consume, daemon=True).start()
    threading.Timer(0.3, watch.close).start()
    assert done.wait(5), "the iteration did not end after close()"
    assert [h["Authorization"] for h in got] == ["Bearer a"]


def test_a_failed_precondition_watch_end_is_not_needs_login_unless_it_says_so(
    broker: FakeBroker, client: Client
) -> None:
    broker.watch_queue("expired").put(
        (grpc.StatusCode.FAILED_PRECONDITION, "credential `expired` expired at 2026-01-01")
    )
    with pytest.raises(FailedPrecondition) as raised:
        next(client.watch("expired"))
    assert not isinstance(raised.value, NeedsLogin)
