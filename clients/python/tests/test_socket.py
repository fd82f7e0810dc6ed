"""Which socket a client dials: the argument, else $TOKEND_SOCKET, else
/run/tokend/tokend.sock, always as an absolute ``unix://`` target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fake_tokend import CANARY, FakeBroker

from tokend_client import (
    DEFAULT_SOCKET,
    SOCKET_ENV,
    AsyncClient,
    Client,
    Unavailable,
    resolve_socket,
)


def test_the_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOCKET_ENV, "/from/env.sock")
    assert resolve_socket("/from/arg.sock") == "/from/arg.sock"
    assert Client("/from/arg.sock").target == "unix:///from/arg.sock"


def test_the_environment_when_there_is_no_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SOCKET_ENV, "/from/env.sock")
    assert resolve_socket() == "/from/env.sock"
    assert Client().socket == "/from/env.sock"
    assert AsyncClient().target == "unix:///from/env.sock"


@pytest.mark.parametrize("env", [None, ""])
def test_the_default_without_argument_or_environment(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    if env is None:
        monkeypatch.delenv(SOCKET_ENV, raising=False)
    else:
        monkeypatch.setenv(SOCKET_ENV, env)
    assert DEFAULT_SOCKET == "/run/tokend/tokend.sock"
    assert resolve_socket() == DEFAULT_SOCKET
    assert Client().target == "unix:///run/tokend/tokend.sock"


def test_a_relative_path_is_made_absolute_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(SOCKET_ENV, "run/env.sock")
    from_env = Client()
    from_arg = Client(Path("arg.sock"))
    monkeypatch.chdir("/")
    assert from_env.socket == os.path.join(str(tmp_path), "run/env.sock")
    assert from_arg.target == f"unix://{tmp_path}/arg.sock"


def test_an_empty_argument_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        resolve_socket("")


def test_the_client_reaches_the_daemon_the_environment_names(
    broker: FakeBroker, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker.set_tokens("search-bot", CANARY)
    monkeypatch.setenv(SOCKET_ENV, broker.socket)
    with Client(timeout=5) as client:
        assert client.headers("search-bot") == {"Authorization": f"Bearer {CANARY}"}


def test_a_missing_daemon_is_unavailable_naming_the_socket(tmp_path: Path) -> None:
    socket = str(tmp_path / "nobody.sock")
    with Client(socket, timeout=2) as client:
        with pytest.raises(Unavailable) as raised:
            client.headers("search-bot")
    assert str(raised.value).startswith(f"cannot reach tokend at {socket} (is it running?): ")
