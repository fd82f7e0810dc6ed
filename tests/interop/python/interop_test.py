"""A stock grpcio client against tokend, driven by tests/interop.rs.

    python interop_test.py COMMAND SOCKET [ARGS...]

Every channel is made exactly as a user would write it, with the default
target and no channel options:

    grpc.insecure_channel("unix:///abs/path/tokend.sock")

Each command prints JSON to stdout (one object; `watch` prints one per line
as the responses arrive) and exits 0 when it could talk to the daemon at all.
An RPC's failure is part of the result, as {"code": "PERMISSION_DENIED",
"details": "..."}, so the test asserts on the code; anything else (bad
arguments, an exception that is not an RpcError) exits non-zero with the
reason on stderr.

The stubs of proto/tokend/v1/tokend.proto come from `python -m
grpc_tools.protoc` and are found through PYTHONPATH.

Commands:
  health SOCKET SERVICE...         Health/Check for each service name
  reflection SOCKET                ServerReflection list_services, v1 (a raw
                                   stub) and v1alpha (grpcio-reflection's
                                   client), and TokenBroker's methods
  get-headers SOCKET CREDENTIAL    TokenBroker/GetHeaders
  many SOCKET CREDENTIAL N         N GetHeaders calls on one channel
  watch SOCKET CREDENTIAL N        WatchHeaders, the first N responses
"""

import json
import sys

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.json_format import MessageToDict
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tokend.v1 import tokend_pb2, tokend_pb2_grpc

TIMEOUT = 10


def channel(socket):
    if not socket.startswith("/"):
        sys.exit(f"the socket path must be absolute, got {socket!r}")
    return grpc.insecure_channel(f"unix://{socket}")


def error(e):
    return {"code": e.code().name, "details": e.details()}


def to_dict(message):
    return MessageToDict(message, preserving_proto_field_name=True)


def out(value):
    print(json.dumps(value, sort_keys=True), flush=True)


def health(socket, *services):
    stub = health_pb2_grpc.HealthStub(channel(socket))
    result = {}
    for service in services:
        try:
            resp = stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=TIMEOUT
            )
            result[service] = health_pb2.HealthCheckResponse.ServingStatus.Name(
                resp.status
            )
        except grpc.RpcError as e:
            result[service] = error(e)
    out(result)


def reflection(socket):
    ch = channel(socket)
    result = {}
    # v1: grpcio-reflection ships only v1alpha's messages, which are the v1
    # messages byte for byte; only the method path differs.
    info = ch.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    try:
        responses = list(
            info(
                iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                timeout=TIMEOUT,
            )
        )
        result["v1"] = sorted(
            s.name
            for r in responses
            for s in r.list_services_response.service
        )
    except grpc.RpcError as e:
        result["v1"] = error(e)
    # v1alpha, through grpcio-reflection's own client, which also resolves
    # TokenBroker's file and its imports (google/protobuf/*.proto).
    try:
        db = ProtoReflectionDescriptorDatabase(ch)
        result["v1alpha"] = sorted(db.get_services())
        pool = descriptor_pool.DescriptorPool(db)
        broker = pool.FindServiceByName("tokend.v1.TokenBroker")
        result["token_broker_methods"] = sorted(m.name for m in broker.methods)
    except grpc.RpcError as e:
        result["v1alpha"] = error(e)
    out(result)


def get_headers(socket, credential):
    stub = tokend_pb2_grpc.TokenBrokerStub(channel(socket))
    try:
        resp = stub.GetHeaders(
            tokend_pb2.GetHeadersRequest(credential=credential), timeout=TIMEOUT
        )
        out({"response": to_dict(resp)})
    except grpc.RpcError as e:
        out(error(e))


def many(socket, credential, n):
    # One channel, one connection: from the second call on, grpcio's HPACK
    # encoder names :authority, :path and the rest by dynamic-table index.
    stub = tokend_pb2_grpc.TokenBrokerStub(channel(socket))
    request = tokend_pb2.GetHeadersRequest(credential=credential)
    ok, fingerprints, errors = 0, set(), []
    for _ in range(int(n)):
        try:
            resp = stub.GetHeaders(request, timeout=TIMEOUT)
            ok += 1
            fingerprints.add(resp.token_fingerprint)
        except grpc.RpcError as e:
            errors.append(error(e))
    out({"ok": ok, "fingerprints": sorted(fingerprints), "errors": errors[:5]})


def watch(socket, credential, n):
    stub = tokend_pb2_grpc.TokenBrokerStub(channel(socket))
    stream = stub.WatchHeaders(
        tokend_pb2.GetHeadersRequest(credential=credential), timeout=3 * TIMEOUT
    )
    try:
        for i, resp in enumerate(stream):
            out({"response": to_dict(resp)})
            if i + 1 == int(n):
                stream.cancel()
                return
        out({"code": "OK", "details": "the stream ended"})
    except grpc.RpcError as e:
        out(error(e))


COMMANDS = {
    "health": health,
    "reflection": reflection,
    "get-headers": get_headers,
    "many": many,
    "watch": watch,
}

if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
