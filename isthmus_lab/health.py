"""`python -m isthmus_lab.health HOST:PORT --controller-key KEY`: one grpc.health.v1
Check, for the lab, over the controller's TLS pinned to its public key (isthmus.tlscert).

Prints one word on stdout: the serving status (`SERVING`, `NOT_SERVING`, `UNKNOWN`,
`SERVICE_UNKNOWN`) and exits 0, or the gRPC status code of a failed call (e.g.
`UNAVAILABLE`, `DEADLINE_EXCEEDED`) and exits 1; the error details go to stderr. The lab
runs it inside a namespace (`ip netns exec`), where the controller listens.
"""

from __future__ import annotations

import argparse
import sys

import grpc

from isthmus.signing import ControllerPublicKey
from isthmus.tlscert import channel_credentials, channel_options
from isthmus.v1 import health_pb2, health_pb2_grpc

DEFAULT_TIMEOUT = 2.0


def check(
    address: str,
    controller: ControllerPublicKey,
    service: str = "",
    timeout: float = DEFAULT_TIMEOUT,
) -> str:
    """The serving status name at `address`, a controller holding `controller`'s key.

    Raises:
        grpc.RpcError: the call failed (no listener, timeout, another key, ...).
    """
    credentials = channel_credentials(controller)
    with grpc.secure_channel(address, credentials, options=channel_options()) as channel:
        stub = health_pb2_grpc.HealthStub(channel)  # type: ignore[no-untyped-call]
        request = health_pb2.HealthCheckRequest(service=service)
        answer = stub.Check(request, timeout=timeout)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m isthmus_lab.health", description="One grpc.health.v1 Check."
    )
    parser.add_argument("address", help="HOST:PORT of the gRPC server")
    parser.add_argument(
        "--controller-key",
        required=True,
        type=ControllerPublicKey.from_base64,
        help="the controller's public key (base64), as edges pin it",
    )
    parser.add_argument("--service", default="", help="service name; default: the server")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds")
    args = parser.parse_args(argv)
    try:
        status = check(args.address, args.controller_key, args.service, args.timeout)
    except grpc.RpcError as e:
        code = e.code() if isinstance(e, grpc.Call) else None
        print(code.name if code is not None else "RPC_ERROR")
        print(f"health check of {args.address} failed: {e}", file=sys.stderr)
        return 1
    print(status)
    return 0


if __name__ == "__main__":
    sys.exit(main())
