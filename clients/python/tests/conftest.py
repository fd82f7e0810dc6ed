"""Fixtures: a fake tokend on a Unix socket in a temp directory, and a
Client on it."""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent import futures
from typing import Iterator

import grpc
import pytest
from fake_tokend import FakeBroker

from tokend_client import Client
from tokend_client._proto import tokend_pb2_grpc


@pytest.fixture
def broker() -> Iterator[FakeBroker]:
    """A running fake tokend; ``broker.socket`` is its socket's path."""
    # Short: a Unix socket's path has at most 107 bytes.
    directory = tempfile.mkdtemp(prefix="tkc-")
    socket = os.path.join(directory, "tokend.sock")
    fake = FakeBroker(socket)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    tokend_pb2_grpc.add_TokenBrokerServicer_to_server(fake, server)
    server.add_insecure_port(f"unix://{socket}")
    server.start()
    try:
        yield fake
    finally:
        server.stop(grace=None)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def client(broker: FakeBroker) -> Iterator[Client]:
    """A Client on the fake tokend's socket."""
    with Client(broker.socket, timeout=5) as c:
        yield c
