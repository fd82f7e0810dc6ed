"""tokend-client against the real daemon, driven by tests/python_client.rs.

    python live_client.py COMMAND [ARGS...]

The socket comes from $TOKEND_SOCKET: every client here is made with
``Client()``/``AsyncClient()``, as a program using the package would. Each
command prints one JSON object on stdout (``watch`` one per header set, as
they arrive) and exits 0 when it could run at all; a TokendError expected by
the command is part of the result as {"error": CLASS, "code": CODE,
"message": MESSAGE}. Logging goes to stderr at DEBUG, so the Rust side can
check it for the canary.

Commands:
  headers                   user and global headers, fingerprints, expiry
  errors                    the typed exception for each refusal the test
                            config provokes
  credentials               credentials()
  invalidate CREDENTIAL     report the current token; the replacement
  watch CREDENTIAL N        the first N header sets of watch()
  async                     AsyncClient: headers, credentials, a refusal,
                            watch's first set
  retry CREDENTIAL          httpx_client against a mock API that refuses the
                            first token it sees
  glean-search URL CREDENTIAL MODE [ACT_AS]
                            glean-api-client's client.search.query at URL,
                            authenticated by api_token (MODE api_token) or
                            httpx_client (MODE httpx)
  glean-chat URL CREDENTIAL MODE [ACT_AS]
                            client.chat.create, authenticated as for
                            glean-search
  glean-revoked URL CREDENTIAL REVOKE_URL
                            search through httpx_client, revoke the token at
                            the emulator (POST REVOKE_URL), search again
  concurrent-revoked URL CREDENTIAL REVOKE_URL N
                            one search through httpx_client, revoke the token
                            at the emulator, then N searches at once from N
                            threads sharing that httpx_client
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import urllib.request
from typing import Any, Callable, Dict, List, Optional

import httpx

from tokend_client import AsyncClient, Client, Headers, TokendError
from tokend_client.glean import api_token, httpx_client


def out(value: Any) -> None:
    print(json.dumps(value, sort_keys=True), flush=True)


def headers_json(headers: Headers) -> Dict[str, Any]:
    return {
        "headers": [[name, value] for name, value in headers.items()],
        "fingerprint": headers.fingerprint,
        "expires_at": headers.expires_at.isoformat() if headers.expires_at else None,
        "stale": headers.stale,
        "is_dict": isinstance(headers, dict),
    }


def error_json(e: TokendError) -> Dict[str, Any]:
    return {
        "error": type(e).__name__,
        "classes": [c.__name__ for c in type(e).__mro__ if issubclass(c, TokendError)],
        "code": e.code.name if e.code else None,
        "message": str(e),
    }


def outcome(call: Callable[[], Any]) -> Dict[str, Any]:
    try:
        result = call()
    except TokendError as e:
        return error_json(e)
    return headers_json(result) if isinstance(result, Headers) else {"result": result}


def headers() -> None:
    client = Client()
    out(
        {
            "socket": client.socket,
            "target": client.target,
            "user": headers_json(client.headers("user", scopes=["SEARCH"], min_valid=30)),
            "global": headers_json(client.headers("global", act_as="alice@corp.example")),
        }
    )


def errors() -> None:
    client = Client()
    out(
        {
            "forbidden": outcome(lambda: client.headers("forbidden")),
            "missing": outcome(lambda: client.headers("no-such-credential")),
            "no_act_as": outcome(lambda: client.headers("global")),
            "act_as_denied": outcome(lambda: client.headers("global", act_as="eve@evil.example")),
            "missing_scope": outcome(lambda: client.headers("user", scopes=["CHAT"])),
            "needs_login": outcome(lambda: client.headers("sso")),
            "invalidate_forbidden": outcome(
                lambda: client.invalidate("forbidden", "0123456789abcdef")
            ),
        }
    )


def status_json(status: Any) -> Dict[str, Any]:
    return {
        "name": status.name,
        "kind": status.kind,
        "permission": status.permission,
        "state": status.state.value,
        "expires_at": status.expires_at.isoformat() if status.expires_at else None,
        "scopes": list(status.scopes),
        "owner": status.owner,
        "last_error": status.last_error,
        "fleet": fleet_json(status.fleet),
    }


def fleet_json(fleet: Any) -> Optional[Dict[str, Any]]:
    if fleet is None:
        return None
    since = fleet.unreachable_since
    return {
        "node": fleet.node,
        "role": fleet.role,
        "leader": fleet.leader,
        "unreachable_since": since.isoformat() if since else None,
    }


def credentials() -> None:
    out({"credentials": [status_json(s) for s in Client().credentials()]})


def invalidate(credential: str) -> None:
    client = Client()
    first = client.headers(credential)
    refreshing = client.invalidate(credential, first.fingerprint)
    # tokend may answer at once or after the refresh; either way the
    # replacement is what headers() serves within a few seconds.
    deadline = time.monotonic() + 10
    second = client.headers(credential)
    while refreshing and second.fingerprint == first.fingerprint and time.monotonic() < deadline:
        time.sleep(0.05)
        second = client.headers(credential)
    out(
        {
            "first": headers_json(first),
            "refreshing": refreshing,
            "second": headers_json(second),
            # A report about a token already replaced is ignored.
            "again": client.invalidate(credential, first.fingerprint),
        }
    )


def watch(credential: str, count: str) -> None:
    with Client().watch(credential) as stream:
        for n, headers in enumerate(stream, start=1):
            out(headers_json(headers))
            if n == int(count):
                break


def async_() -> None:
    async def main() -> Dict[str, Any]:
        async with AsyncClient() as client:
            user = await client.headers("user")
            statuses = await client.credentials()
            try:
                await client.headers("forbidden")
                refused: Dict[str, Any] = {}
            except TokendError as e:
                refused = error_json(e)
            async with client.watch("user") as stream:
                watched = await stream.__anext__()
        return {
            "user": headers_json(user),
            "names": sorted(s.name for s in statuses),
            "forbidden": refused,
            "watched": headers_json(watched),
        }

    out(asyncio.run(main()))


def retry(credential: str) -> None:
    seen: List[str] = []

    def api(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Authorization", ""))
        return httpx.Response(401 if len(seen) == 1 else 200, json={"results": []})

    tokend = Client()
    with httpx_client(credential, client=tokend, transport=httpx.MockTransport(api)) as http:
        response = http.post("https://api.example/rest/api/v1/search", json={"query": "q"})
    out(
        {
            "status": response.status_code,
            "requests": len(seen),
            "distinct_tokens": len(set(seen)),
            "bearer": all(s.startswith("Bearer ") for s in seen),
            "now_served": headers_json(tokend.headers(credential)),
            "last_sent_is_served": seen[-1] == tokend.headers(credential)["Authorization"],
        }
    )


def glean_error(e: Exception) -> Dict[str, Any]:
    status = getattr(e, "status_code", None)
    return {"error": type(e).__name__, "status": status}


def glean(url: str, credential: str, mode: str, act_as: Optional[str] = None):  # type: ignore[no-untyped-def]
    from glean.api_client import Glean

    if mode == "api_token":
        return Glean(api_token=api_token(credential), server_url=url)
    if mode == "httpx":
        return Glean(server_url=url, client=httpx_client(credential, act_as=act_as))
    raise SystemExit(f"unknown mode {mode!r}")


def glean_search(url: str, credential: str, mode: str, act_as: Optional[str] = None) -> None:
    with glean(url, credential, mode, act_as) as client:
        try:
            response = client.client.search.query(query="quarterly reports", page_size=1)
        except Exception as e:  # noqa: BLE001 - the SDK's error, reported as data
            out(glean_error(e))
            return
    out({"results": [r.title for r in response.results or []], "request_id": response.request_id})


def glean_chat(url: str, credential: str, mode: str, act_as: Optional[str] = None) -> None:
    from glean.api_client import models

    with glean(url, credential, mode, act_as) as client:
        response = client.client.chat.create(
            messages=[
                {
                    "author": models.Author.USER,
                    "fragments": [{"text": "What are the latest quarterly results?"}],
                }
            ],
        )
    texts = [f.text for m in response.messages or [] for f in m.fragments or []]
    out({"texts": texts, "chat_id": response.chat_id})


def glean_revoked(url: str, credential: str, revoke_url: str) -> None:
    tokend = Client()
    before = tokend.headers(credential).fingerprint
    with glean(url, credential, "httpx") as client:
        first = client.client.search.query(query="before", page_size=1)
        urllib.request.urlopen(urllib.request.Request(revoke_url, method="POST")).read()
        second = client.client.search.query(query="after", page_size=1)
    out(
        {
            "first": first.request_id,
            "second": second.request_id,
            "before": before,
            "after": tokend.headers(credential).fingerprint,
        }
    )


def concurrent_revoked(url: str, credential: str, revoke_url: str, n: str) -> None:
    import threading

    count = int(n)
    tokend = Client()
    search = f"{url}/rest/api/v1/search"
    with httpx_client(credential, client=tokend, timeout=30.0) as http:
        first = http.post(search, json={"query": "before", "pageSize": 1})
        before = tokend.headers(credential).fingerprint
        urllib.request.urlopen(urllib.request.Request(revoke_url, method="POST")).read()
        barrier = threading.Barrier(count)
        results: List[Any] = [None] * count

        def one(i: int) -> None:
            barrier.wait()
            try:
                r = http.post(search, json={"query": f"after {i}", "pageSize": 1})
                results[i] = {"status": r.status_code, "request_id": r.json().get("requestID")}
            except Exception as e:  # noqa: BLE001 - reported as data
                results[i] = {"error": f"{type(e).__name__}: {e}"}

        threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    out(
        {
            "first": first.status_code,
            "before": before,
            "after": tokend.headers(credential).fingerprint,
            "statuses": [r.get("status") if r else None for r in results],
            "errors": [r["error"] for r in results if r and "error" in r],
            "request_ids": len({r.get("request_id") for r in results if r}),
        }
    )


COMMANDS: Dict[str, Callable[..., None]] = {
    "headers": headers,
    "errors": errors,
    "credentials": credentials,
    "invalidate": invalidate,
    "watch": watch,
    "async": async_,
    "retry": retry,
    "glean-search": glean_search,
    "glean-chat": glean_chat,
    "glean-revoked": glean_revoked,
    "concurrent-revoked": concurrent_revoked,
}


def main() -> None:
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])


if __name__ == "__main__":
    main()
