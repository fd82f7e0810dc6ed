"""tokend_client.glean: the SDK's api_token callable, and httpx auth that
sets tokend's headers and, on a 401, reports the token and retries once."""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
from typing import Callable, List

import grpc
import httpx
import pytest
from fake_tokend import CANARY, FakeBroker, fingerprint

from tokend_client import AsyncClient, Client, PermissionDenied
from tokend_client.glean import (
    api_token,
    async_httpx_auth,
    async_httpx_client,
    httpx_auth,
    httpx_client,
)

URL = "https://acme-be.glean.com/rest/api/v1/search"
BODY = {"query": "quarterly reports", "pageSize": 1}


class Seen:
    """One request as the API received it (httpx's auth flow sends the same
    Request object again, changed, so each is copied on arrival)."""

    def __init__(self, request: httpx.Request) -> None:
        self.method = request.method
        self.url = request.url
        self.headers = httpx.Headers(request.headers)
        self.content = request.read()


class FakeApi:
    """An API accepting only the bearer tokens in ``valid``; records every
    request it sees."""

    def __init__(self, *valid: str) -> None:
        self.valid = set(valid)
        self.seen: List[Seen] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(Seen(request))
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if token not in self.valid:
            return httpx.Response(401, text="Unauthorized")
        return httpx.Response(200, json={"results": []})

    def tokens(self) -> List[str]:
        return [r.headers["Authorization"] for r in self.seen]


def transport(api: Callable[[httpx.Request], httpx.Response]) -> httpx.MockTransport:
    return httpx.MockTransport(api)


def test_every_header_tokend_returns_is_set(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("global-bot", CANARY)
    broker.extra_headers["global-bot"] = [("X-Glean-Auth-Type", "OAUTH")]
    api = FakeApi(CANARY)
    with httpx_client(
        "global-bot", act_as="alice@corp.example", client=client, transport=transport(api)
    ) as http:
        response = http.post(URL, json=BODY)
    assert response.status_code == 200
    (request,) = api.seen
    assert request.headers["Authorization"] == f"Bearer {CANARY}"
    assert request.headers["X-Glean-ActAs"] == "alice@corp.example"
    assert request.headers["X-Glean-Auth-Type"] == "OAUTH"
    assert broker.requests[-1].act_as == "alice@corp.example"


def test_a_401_reports_the_token_and_retries_once_with_its_replacement(
    broker: FakeBroker, client: Client
) -> None:
    broker.set_tokens("oauth", "revoked", "replacement")
    api = FakeApi("replacement")
    with httpx_client("oauth", client=client, transport=transport(api)) as http:
        response = http.post(URL, json=BODY)
    assert response.status_code == 200
    assert api.tokens() == ["Bearer revoked", "Bearer replacement"]
    assert broker.invalidated == [("oauth", fingerprint("revoked"))]
    # The retry carries the same request.
    first, retry = api.seen
    assert (retry.method, retry.url) == (first.method, first.url)
    assert json.loads(retry.content) == json.loads(first.content) == BODY


def test_a_second_401_is_returned_without_another_retry(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("oauth", "one", "two", "three")
    api = FakeApi()  # rejects everything
    with httpx_client("oauth", client=client, transport=transport(api)) as http:
        response = http.post(URL, json=BODY)
    assert response.status_code == 401
    assert api.tokens() == ["Bearer one", "Bearer two"]
    assert broker.invalidated == [("oauth", fingerprint("one"))]


def test_no_retry_when_tokend_has_no_other_token(
    broker: FakeBroker, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    broker.set_tokens("search-bot", "static")  # a Glean token: a person rotates it
    api = FakeApi()
    with caplog.at_level(logging.WARNING, logger="tokend_client"):
        with httpx_client("search-bot", client=client, transport=transport(api)) as http:
            response = http.get(URL)
    assert response.status_code == 401
    assert api.tokens() == ["Bearer static"]
    assert broker.invalidated == [("search-bot", fingerprint("static"))]
    assert "tokend has no other" in caplog.text and fingerprint("static") in caplog.text


def test_the_retry_waits_for_a_replacement_still_in_flight(
    broker: FakeBroker, client: Client
) -> None:
    # A daemon that answers Invalidate at once but keeps serving the
    # reported token until the refresh lands.
    broker.replace_after = 0.3
    broker.set_tokens("oauth", "revoked", "replacement")
    api = FakeApi("replacement")
    with httpx_client("oauth", client=client, transport=transport(api)) as http:
        assert http.get(URL).status_code == 200
    assert api.tokens() == ["Bearer revoked", "Bearer replacement"]


def test_tokends_refusal_raises_before_any_request(broker: FakeBroker, client: Client) -> None:
    broker.errors["forbidden"] = (
        grpc.StatusCode.PERMISSION_DENIED,
        "uid 1000 may not use credential `forbidden`",
    )
    api = FakeApi()
    with httpx_client("forbidden", client=client, transport=transport(api)) as http:
        with pytest.raises(PermissionDenied, match="may not use credential `forbidden`"):
            http.get(URL)
    assert api.seen == []


def test_httpx_auth_plugs_into_any_client(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("search-bot", CANARY)
    api = FakeApi(CANARY)
    auth = httpx_auth("search-bot", client=client, scopes=["SEARCH"], min_valid=120)
    with httpx.Client(transport=transport(api)) as http:
        assert http.get(URL, auth=auth).status_code == 200
    sent = broker.requests[-1]
    assert list(sent.required_scopes) == ["SEARCH"] and sent.min_valid.seconds == 120
    assert CANARY not in repr(auth)


def test_the_sync_auth_refuses_an_async_client(broker: FakeBroker, client: Client) -> None:
    broker.set_tokens("search-bot", "t")

    async def main() -> None:
        async with httpx.AsyncClient(
            auth=httpx_auth("search-bot", client=client), transport=transport(FakeApi("t"))
        ) as http:
            with pytest.raises(RuntimeError, match="async_httpx_auth"):
                await http.get(URL)

    asyncio.run(main())


def test_async_a_401_reports_the_token_and_retries_once(broker: FakeBroker) -> None:
    broker.set_tokens("oauth", "revoked", "replacement")
    broker.set_tokens("global-bot", "g")
    api = FakeApi("replacement", "g")

    async def main() -> None:
        tokend = AsyncClient(broker.socket, timeout=5)
        async with async_httpx_client("oauth", client=tokend, transport=transport(api)) as http:
            response = await http.post(URL, json=BODY)
            assert response.status_code == 200
        auth = async_httpx_auth("global-bot", "bob@corp.example", client=tokend)
        async with httpx.AsyncClient(transport=transport(api)) as http:
            assert (await http.get(URL, auth=auth)).status_code == 200
        await tokend.close()

    asyncio.run(main())
    assert api.tokens() == ["Bearer revoked", "Bearer replacement", "Bearer g"]
    assert api.seen[-1].headers["X-Glean-ActAs"] == "bob@corp.example"
    assert broker.invalidated == [("oauth", fingerprint("revoked"))]


def test_async_a_second_401_is_returned(broker: FakeBroker) -> None:
    broker.set_tokens("oauth", "one", "two", "three")
    api = FakeApi()

    async def main() -> int:
        async with async_httpx_client(
            "oauth", client=AsyncClient(broker.socket), transport=transport(api)
        ) as http:
            return (await http.get(URL)).status_code

    assert asyncio.run(main()) == 401
    assert api.tokens() == ["Bearer one", "Bearer two"]


def test_api_token_is_the_bare_token_fetched_on_every_call(
    broker: FakeBroker, client: Client
) -> None:
    broker.set_tokens("search-bot", "first", "second")
    token = api_token("search-bot", client, scopes=["SEARCH"])
    assert callable(token)
    assert token() == "first"
    assert list(broker.requests[-1].required_scopes) == ["SEARCH"]
    # After a 401 the caller reports the token the SDK sent.
    assert token.invalidate() is True
    assert broker.invalidated == [("search-bot", fingerprint("first"))]
    assert token() == "second"


def test_api_token_refuses_what_the_sdk_cannot_send(broker: FakeBroker, client: Client) -> None:
    with pytest.raises(ValueError, match="httpx_client"):
        api_token("global-bot", client, act_as="alice@corp.example")
    broker.set_tokens("oauth", CANARY)
    broker.extra_headers["oauth"] = [("X-Glean-Auth-Type", "OAUTH")]
    with pytest.raises(ValueError) as raised:
        api_token("oauth", client)()
    assert "X-Glean-Auth-Type" in str(raised.value)
    assert CANARY not in str(raised.value)


def test_without_httpx_api_token_works_and_the_helpers_say_what_to_install(
    broker: FakeBroker, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if `pip install tokend-client` without the [httpx] extra.
    monkeypatch.setitem(sys.modules, "httpx", None)  # type: ignore[arg-type]
    monkeypatch.delitem(sys.modules, "tokend_client._httpx_auth", raising=False)
    monkeypatch.delitem(sys.modules, "tokend_client.glean", raising=False)
    glean = importlib.import_module("tokend_client.glean")
    broker.set_tokens("search-bot", "t")
    assert glean.api_token("search-bot", client)() == "t"
    for make in (glean.httpx_auth, glean.httpx_client, glean.async_httpx_client):
        with pytest.raises(ImportError, match=r"pip install 'tokend-client\[httpx\]'"):
            make("search-bot")
