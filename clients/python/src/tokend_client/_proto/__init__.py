"""gRPC stubs of tokend's ``proto/tokend/v1/tokend.proto``, generated with
grpcio-tools when the package is built (see setup.py); never checked in.

The proto keeps its own name (``tokend/v1/tokend.proto``, package
``tokend.v1``) in protobuf's descriptor pool. Private: use the package's
clients.
"""
