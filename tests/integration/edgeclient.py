"""Test helpers: deterministic edge keys, the TLS channel pinned to the controller's key,
and a client that calls the controller as one edge (a fresh challenge and proof for every
call), shared by the controller integration tests."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import grpc
import nacl.bindings

from controller.config import AllowedEdge
from isthmus.auth import AUTH_METADATA, auth_value
from isthmus.ids import EdgeName
from isthmus.keys import PublicKey
from isthmus.signing import ControllerPublicKey
from isthmus.tlscert import channel_credentials, channel_options
from isthmus.v1 import isthmus_pb2 as pb
from isthmus.v1 import isthmus_pb2_grpc as pb_grpc

SERVICE = "/isthmus.v1.Controller/"


@dataclass(frozen=True)
class EdgeKeys:
    name: str
    private: bytes
    public: PublicKey
    host: int  # the last byte of its endpoint 198.18.0.x

    def allowed(self, *routes: str) -> AllowedEdge:
        nets = tuple(ipaddress.ip_network(r) for r in routes)
        return AllowedEdge(EdgeName(self.name), self.public, nets)


def edge_keys(name: str, seed: int) -> EdgeKeys:
    """The key pair derived from `seed`, the same in every run."""
    pk, sk = nacl.bindings.crypto_box_seed_keypair(bytes([seed]) * 32)
    return EdgeKeys(name, sk, PublicKey(pk), 10 + seed)


def controller_channel(address: str, controller: ControllerPublicKey) -> grpc.aio.Channel:
    """A channel to the Controller service, TLS pinned to `controller` (as edges dial)."""
    credentials = channel_credentials(controller)
    return grpc.aio.secure_channel(address, credentials, options=channel_options())


class EdgeClient:
    """Calls the controller as one edge: a fresh challenge and proof for every call."""

    def __init__(
        self, channel: grpc.aio.Channel, controller: ControllerPublicKey, keys: EdgeKeys
    ) -> None:
        self.stub = pb_grpc.ControllerStub(channel)
        self.controller = controller
        self.keys = keys

    async def metadata(self, method: str, request: Any) -> tuple[tuple[str, bytes], ...]:
        challenge = (await self.stub.Challenge(pb.ChallengeRequest())).challenge
        value = auth_value(
            self.keys.private,
            self.keys.public,
            self.controller,
            SERVICE + method,
            challenge,
            request.SerializeToString(deterministic=True),
        )
        return ((AUTH_METADATA, value),)

    def request(self, *routes: str, port: int = 51820) -> pb.RegisterRequest:
        return pb.RegisterRequest(
            name=self.keys.name,
            public_key=self.keys.public.raw,
            endpoints=[f"198.18.0.{self.keys.host}:{port}"],
            routes=list(routes),
        )

    async def register(self, *routes: str, port: int = 51820) -> pb.RegisterResponse:
        return await self.register_pb(self.request(*routes, port=port))

    async def register_pb(self, request: pb.RegisterRequest) -> pb.RegisterResponse:
        md = await self.metadata("Register", request)
        return await self.stub.Register(request, metadata=md)

    async def watch(self, known_version: int = 0, known_epoch: bytes = b"") -> Any:
        request = pb.WatchRequest(
            name=self.keys.name, known_version=known_version, known_epoch=known_epoch
        )
        return self.stub.Watch(request, metadata=await self.metadata("Watch", request))

    async def report(self, applied: int, error: str = "", refused: int = 0) -> None:
        request = pb.ReportRequest(
            name=self.keys.name, applied_version=applied, error=error, refused_version=refused
        )
        await self.stub.Report(request, metadata=await self.metadata("Report", request))
