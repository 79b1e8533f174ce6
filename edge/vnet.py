"""The virtio-net header: the 10 bytes before every packet on a TUN opened IFF_VNET_HDR.

Owns the header's one declaration: its layout (`VNET`, the field offsets), its flag and
GSO type values, and its codec. The data plane reads fields on the hot path through
`VNET` and the offsets; nothing else re-declares them. Pure: bytes in, bytes out.

```
virtio_net_hdr (10 bytes, little-endian)
 0       1          2         4          6            8             10
 | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
```
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

VNET_HDR_LEN: Final = 10
FLAGS_OFFSET: Final = 0
GSO_TYPE_OFFSET: Final = 1
HDR_LEN_OFFSET: Final = 2
GSO_SIZE_OFFSET: Final = 4
CSUM_START_OFFSET: Final = 6
CSUM_OFFSET_OFFSET: Final = 8
# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
VNET: Final = struct.Struct("<BBHHHH")
assert VNET.size == VNET_HDR_LEN

F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_UDP: Final = 3
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80

Buffer = bytes | bytearray | memoryview


class OffloadError(ValueError):
    """A packet with a virtio-net header that cannot be segmented or completed as stated."""


@dataclass(frozen=True, slots=True)
class VnetHeader:
    flags: int = 0
    gso_type: int = GSO_NONE
    hdr_len: int = 0
    gso_size: int = 0
    csum_start: int = 0
    csum_offset: int = 0


NO_OFFLOAD: Final = VnetHeader()
PLAIN: Final = VNET.pack(0, GSO_NONE, 0, 0, 0, 0)


def decode_vnet(data: Buffer) -> VnetHeader:
    """The virtio-net header at the start of `data`.

    Raises:
        OffloadError: fewer than VNET_HDR_LEN bytes.
    """
    if len(data) < VNET_HDR_LEN:
        raise OffloadError(f"a virtio-net header is {VNET_HDR_LEN} bytes, got {len(data)}")
    return VnetHeader(*VNET.unpack_from(data))


def encode_vnet(header: VnetHeader) -> bytes:
    return VNET.pack(
        header.flags,
        header.gso_type,
        header.hdr_len,
        header.gso_size,
        header.csum_start,
        header.csum_offset,
    )


def plain_vnet() -> bytes:
    """The header of a packet with no offload (the kernel checks its checksums)."""
    return PLAIN
