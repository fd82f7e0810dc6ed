"""No token in any log line, exception, traceback or repr the package makes,
on the paths that handle one: every fake token carries the canary."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Iterator, List

import grpc
import httpx
import pytest
from fake_tokend import CANARY, FakeBroker

from tokend_client import AsyncClient, Client, TokendError
from tokend_client.glean import api_token, async_httpx_client, httpx_client

URL = "https://acme-be.glean.com/rest/api/v1/chat"


@pytest.fixture
def everything_logged(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """Every logger (the package's, httpx's, httpcore's, grpc's) at DEBUG."""
    with caplog.at_level(logging.DEBUG):
        yield caplog


def texts_of(error: BaseException) -> List[str]:
    return [
        str(error),
        repr(error),
        "".join(traceback.format_exception(type(error), error, error.__traceback__)),
    ]


def test_no_token_in_logs_or_errors_anywhere(
    broker: FakeBroker, client: Client, everything_logged: pytest.LogCaptureFixture
) -> None:
    broker.set_tokens("oauth", f"{CANARY}-1", f"{CANARY}-2", f"{CANARY}-3")
    broker.set_tokens("static", f"{CANARY}-static")
    broker.set_tokens("exotic", f"{CANARY}-exotic")
    broker.extra_headers["exotic"] = [("X-Glean-Auth-Type", "OAUTH")]
    broker.errors["forbidden"] = (grpc.StatusCode.PERMISSION_DENIED, "may not use `forbidden`")
    broker.invalidate_errors["limited"] = (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "reported tokens were replaced several times just now",
    )
    broker.set_tokens("limited", f"{CANARY}-limited")
    seen: List[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401, text="Unauthorized")

    errors: List[BaseException] = []
    texts: List[str] = []

    headers = client.headers("oauth")
    texts += [repr(headers), str(headers), repr(client)]
    with httpx_client("oauth", client=client, transport=httpx.MockTransport(api)) as http:
        texts.append(repr(http.auth))
        http.post(URL, json={"messages": []})  # 401, reported, retried, 401
        http.get(URL)  # the third token: 401, reported, no replacement left
    with httpx_client("static", client=client, transport=httpx.MockTransport(api)) as http:
        http.get(URL)
    for credential in ("forbidden", "limited"):
        with httpx_client(credential, client=client, transport=httpx.MockTransport(api)) as http:
            try:
                http.get(URL)
            except TokendError as e:
                errors.append(e)
    token = api_token("exotic", client)
    texts.append(repr(token))
    try:
        token()
    except ValueError as e:
        errors.append(e)

    async def async_flow() -> None:
        async with async_httpx_client(
            "oauth", client=AsyncClient(broker.socket), transport=httpx.MockTransport(api)
        ) as http:
            await http.get(URL)

    broker.set_tokens("oauth", f"{CANARY}-4", f"{CANARY}-5")
    asyncio.run(async_flow())

    # The flows ran: tokens went out, and each failure raised.
    assert len(seen) == 8, seen
    assert all(CANARY in s for s in seen)
    assert [type(e).__name__ for e in errors] == [
        "PermissionDenied",
        "ResourceExhausted",
        "ValueError",
    ]
    assert everything_logged.records, "nothing was logged at all"
    for e in errors:
        texts += texts_of(e)
    texts.append(everything_logged.text)
    for text in texts:
        assert CANARY not in text, text
