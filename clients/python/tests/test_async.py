"""AsyncClient: the same methods over grpc.aio."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from fake_tokend import CANARY, FakeBroker, fingerprint

from tokend_client import AsyncClient, CredentialState, Headers, NeedsLogin, NotFound
from tokend_client._proto import tokend_pb2


def test_headers_invalidate_and_credentials(broker: FakeBroker) -> None:
    broker.set_tokens("oauth", CANARY, "replacement")
    broker.statuses = [
        tokend_pb2.CredentialStatus(name="oauth", state=tokend_pb2.CREDENTIAL_STATE_REFRESHING)
    ]

    async def main() -> None:
        async with AsyncClient(broker.socket, timeout=5) as client:
            headers = await client.headers("oauth", scopes=["SEARCH"], min_valid=60)
            assert isinstance(headers, Headers)
            assert headers == {"Authorization": f"Bearer {CANARY}"}
            assert headers.fingerprint == fingerprint(CANARY)
            assert await client.invalidate("oauth", headers.fingerprint) is True
            again = await client.headers("oauth")
            assert again.fingerprint == fingerprint("replacement")
            statuses = await client.credentials()
            assert [(s.name, s.state) for s in statuses] == [("oauth", CredentialState.REFRESHING)]
            with pytest.raises(NotFound):
                await client.headers("nope")

    asyncio.run(main())
    sent = broker.requests[0]
    assert list(sent.required_scopes) == ["SEARCH"] and sent.min_valid.seconds == 60


def test_watch_is_an_async_iterator_per_rotation(broker: FakeBroker) -> None:
    broker.set_tokens("rotating", "a")
    q = broker.watch_queue("rotating")

    async def main() -> None:
        client = AsyncClient(broker.socket)
        got = []
        q.put(broker.response("rotating"))
        watch = client.watch("rotating")
        async for headers in watch:
            got.append(headers["Authorization"])
            if len(got) == 1:
                broker.set_tokens("rotating", "b")
                q.put(broker.response("rotating"))
            else:
                q.put((grpc.StatusCode.FAILED_PRECONDITION, "credential `rotating` needs login: x"))
                with pytest.raises(NeedsLogin):
                    await watch.__anext__()
                break
        assert got == ["Bearer a", "Bearer b"]
        await client.close()

    asyncio.run(main())


def test_closing_an_async_watch_ends_it_quietly(broker: FakeBroker) -> None:
    broker.set_tokens("rotating", "a")
    broker.watch_queue("rotating").put(broker.response("rotating"))

    async def main() -> None:
        async with AsyncClient(broker.socket) as client:
            async with client.watch("rotating") as watch:
                assert (await watch.__anext__())["Authorization"] == "Bearer a"
            with pytest.raises(StopAsyncIteration):
                await watch.__anext__()

    asyncio.run(main())
    assert broker.watch_cancelled.wait(5)


def test_one_client_serves_successive_event_loops(broker: FakeBroker) -> None:
    broker.set_tokens("search-bot", "t")
    client = AsyncClient(broker.socket, timeout=5)
    for _ in range(2):
        headers = asyncio.run(client.headers("search-bot"))
        assert headers["Authorization"] == "Bearer t"
