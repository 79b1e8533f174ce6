"""Attack helpers for the e2e suite: crafted tunnel packets, pcap parsing, and two small
programs run inside a lab namespace with `python tests/e2e/attack_tools.py COMMAND ...`.

```
  inject --target IP:PORT --packets FILE [--repeat N] [--wait S] [--bind IP[:PORT]]
         [--interval S]
      sends every packet of FILE (hex, one a line) N times from one socket, S apart, then
      listens for S seconds; prints JSON {"sent": n, "replies": [hex, ...], "send_errors":
      {errno name: count}} (a send the kernel refuses, e.g. EMSGSIZE, is counted, not sent)
  flood --target IP:PORT --packets FILE --rate R --duration S [--max-count N]
        [--source IP ...] [--ports-per-source K]
      sends the packets of FILE round robin at R per second for at most S seconds and N
      packets, from K ports on each source address; prints JSON {"sent", "seconds", "rate",
      "send_errors", "replies", "reply_types"}
```
The programs use the standard library only, so they start fast in any namespace; crafting
(which needs the real codec in `edge.tunnel`) happens in the test process.

Packet layouts (docs/protocol.md): every message starts with type (1 byte) and 3 zero bytes.
Initiation (type 1, 148 B): sender index u32 LE at 4. Response (type 2, 92 B): sender index
at 4, receiver index at 8. Cookie reply (type 3, 64 B): receiver index at 4. Data (type 4,
>= 32 B): receiver index u32 LE at 4, counter u64 LE at 8, box from 16.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import selectors
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

TYPE_INITIATION = 1
TYPE_RESPONSE = 2
TYPE_COOKIE_REPLY = 3
TYPE_DATA = 4
INITIATION_LEN = 148
RESPONSE_LEN = 92
COOKIE_REPLY_LEN = 64
DATA_HEADER_LEN = 16
DATA_MIN_LEN = 32

# -- pcap ---------------------------------------------------------------------------------

_PCAP_MAGIC = {
    b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\xc3\xd4": (">", 1e-6),
    b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9),
}
LINKTYPE_ETHERNET = 1
LINKTYPE_LINUX_SLL = 113
_ETHERTYPE_IPV4 = 0x0800
_ETHERTYPE_VLAN = 0x8100
_IPPROTO_UDP = 17


class PcapError(ValueError):
    """The file is not a pcap file this parser reads."""


@dataclass(frozen=True, slots=True)
class Datagram:
    """One captured IPv4/UDP datagram."""

    ts: float  # capture time, seconds since the epoch
    src: tuple[str, int]
    dst: tuple[str, int]
    payload: bytes

    @property
    def msg_type(self) -> int | None:
        return self.payload[0] if self.payload else None


def read_pcap(path: Path | str) -> list[Datagram]:
    """Every IPv4/UDP datagram of a pcap file (Ethernet or Linux cooked), in file order.
    Non-UDP frames, IPv6 and non-first fragments are skipped; a truncated last record
    (a capture stopped mid-write) ends the list.

    Raises:
        PcapError: bad magic or an unsupported link type.
    """
    data = Path(path).read_bytes()
    if len(data) < 24:
        raise PcapError(f"{path}: {len(data)} bytes, shorter than a pcap header")
    magic = _PCAP_MAGIC.get(data[:4])
    if magic is None:
        raise PcapError(f"{path}: not a pcap file (magic {data[:4].hex()})")
    order, unit = magic
    linktype = struct.unpack_from(order + "I", data, 20)[0] & 0x0FFFFFFF
    if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL):
        raise PcapError(f"{path}: link type {linktype} is not Ethernet or Linux cooked")
    out: list[Datagram] = []
    offset = 24
    while offset + 16 <= len(data):
        sec, frac, incl, _orig = struct.unpack_from(order + "IIII", data, offset)
        offset += 16
        frame = data[offset : offset + incl]
        if len(frame) < incl:
            break
        offset += incl
        datagram = _udp_of_frame(frame, linktype, sec + frac * unit)
        if datagram is not None:
            out.append(datagram)
    return out


def _udp_of_frame(frame: bytes, linktype: int, ts: float) -> Datagram | None:
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        ethertype = struct.unpack_from("!H", frame, 12)[0]
        pos = 14
        if ethertype == _ETHERTYPE_VLAN and len(frame) >= 18:
            ethertype = struct.unpack_from("!H", frame, 16)[0]
            pos = 18
    else:
        if len(frame) < 16:
            return None
        ethertype = struct.unpack_from("!H", frame, 14)[0]
        pos = 16
    if ethertype != _ETHERTYPE_IPV4 or len(frame) < pos + 20:
        return None
    ip = frame[pos:]
    version_ihl = ip[0]
    ihl = (version_ihl & 0x0F) * 4
    if version_ihl >> 4 != 4 or ihl < 20 or len(ip) < ihl + 8 or ip[9] != _IPPROTO_UDP:
        return None
    total = struct.unpack_from("!H", ip, 2)[0]
    flags_frag = struct.unpack_from("!H", ip, 6)[0]
    if flags_frag & 0x1FFF:  # a non-first fragment carries no UDP header
        return None
    src_ip = socket.inet_ntoa(ip[12:16])
    dst_ip = socket.inet_ntoa(ip[16:20])
    sport, dport, ulen = struct.unpack_from("!HHH", ip, ihl)
    end = min(len(ip), total, ihl + ulen) if ulen >= 8 else min(len(ip), total)
    return Datagram(ts, (src_ip, sport), (dst_ip, dport), bytes(ip[ihl + 8 : end]))


# -- isthmus messages on the wire ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataPacket:
    """A captured data message (type 4)."""

    datagram: Datagram
    receiver_index: int
    counter: int

    @property
    def key(self) -> tuple[str, int, int, int]:
        """(destination ip, destination port, receiver index, counter): one (key, nonce)."""
        return (*self.datagram.dst, self.receiver_index, self.counter)


def data_packets(datagrams: Iterable[Datagram]) -> list[DataPacket]:
    """The isthmus data messages among `datagrams` (type 4, zero reserved bytes, >= 32 B)."""
    out = []
    for d in datagrams:
        p = d.payload
        if len(p) >= DATA_MIN_LEN and p[:4] == bytes((TYPE_DATA, 0, 0, 0)):
            index, counter = struct.unpack_from("<IQ", p, 4)
            out.append(DataPacket(d, index, counter))
    return out


def handshake_indices(d: Datagram) -> tuple[int, int | None] | None:
    """(sender index, receiver index or None) of an initiation or response; None otherwise."""
    p = d.payload
    if len(p) == INITIATION_LEN and p[:4] == bytes((TYPE_INITIATION, 0, 0, 0)):
        return struct.unpack_from("<I", p, 4)[0], None
    if len(p) == RESPONSE_LEN and p[:4] == bytes((TYPE_RESPONSE, 0, 0, 0)):
        sender, receiver = struct.unpack_from("<II", p, 4)
        return sender, receiver
    return None


def flip_bit(packet: bytes, byte_offset: int, bit: int = 0) -> bytes:
    """`packet` with one bit flipped."""
    changed = bytearray(packet)
    changed[byte_offset] ^= 1 << bit
    return bytes(changed)


def random_data_packet(size: int = 96) -> bytes:
    """A data message with a random receiver index and counter and a random box."""
    header = bytes((TYPE_DATA, 0, 0, 0)) + struct.pack("<IQ", secrets.randbits(32), 1)
    return header + secrets.token_bytes(max(DATA_MIN_LEN, size) - DATA_HEADER_LEN)


def attacker_initiation(victim_public: bytes, attacker_private: bytes | None = None) -> bytes:
    """A well-formed initiation to `victim_public` from a static key the victim does not know:
    mac1 is valid (it needs only the victim's public key), mac2 is zero, the timestamp is now.
    Built with the real codec in edge.tunnel.handshake."""
    from edge.tunnel import handshake  # the test process only; the programs below stay stdlib

    own = handshake.StaticKeys.from_private(attacker_private or secrets.token_bytes(32))
    message, _state = handshake.create_initiation(
        own,
        victim_public,
        secrets.randbits(32),
        secrets.token_bytes(32),
        handshake.tai64n(time.time()),
        None,
    )
    packet = bytes(message)
    if len(packet) != INITIATION_LEN or packet[0] != TYPE_INITIATION:
        raise AssertionError(f"the codec built a {len(packet)}-byte type-{packet[0]} initiation")
    return packet


def write_packets(path: Path, packets: Iterable[bytes]) -> Path:
    """Write packets as hex lines (the programs' --packets format)."""
    path.write_text("".join(p.hex() + "\n" for p in packets), encoding="ascii")
    return path


def read_packets(path: Path | str) -> list[bytes]:
    text = Path(path).read_text(encoding="ascii")
    return [bytes.fromhex(line) for line in text.split() if line]


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` from /proc/PID/stat, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the programs -------------------------------------------------------------------------


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def inject(
    target: tuple[str, int],
    packets: Sequence[bytes],
    repeat: int,
    wait: float,
    bind: str,
    interval: float = 0.0,
) -> dict[str, object]:
    replies: list[str] = []
    errors: Counter[str] = Counter()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        host, _, port = bind.partition(":")
        sock.bind((host, int(port or 0)))
        bound = sock.getsockname()
        sent = 0
        for packet in packets:
            for _ in range(repeat):
                try:
                    sock.sendto(packet, target)
                except OSError as e:
                    errors[errno.errorcode.get(e.errno or 0, str(e.errno))] += 1
                else:
                    sent += 1
                if interval:
                    time.sleep(interval)
        deadline = time.monotonic() + wait
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, _ = sock.recvfrom(65535)
            except TimeoutError:
                break
            except ConnectionRefusedError:
                replies.append("icmp-port-unreachable")
                continue
            replies.append(data.hex())
    return {
        "sent": sent,
        "replies": replies,
        "bound": f"{bound[0]}:{bound[1]}",
        "send_errors": dict(errors),
    }


def flood(
    target: tuple[str, int],
    packets: Sequence[bytes],
    rate: float,
    duration: float,
    max_count: int,
    sources: Sequence[str],
    ports_per_source: int,
) -> dict[str, object]:
    """Send at `rate`/s, bounded by `duration` and `max_count`; counts what comes back."""
    sockets: list[socket.socket] = []
    selector = selectors.DefaultSelector()
    for source in sources:
        for _ in range(ports_per_source):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((source, 0))
            sock.setblocking(False)
            sockets.append(sock)
            selector.register(sock, selectors.EVENT_READ)
    sent = errors = replies = 0
    reply_types: Counter[int] = Counter()
    n_packets, n_sockets = len(packets), len(sockets)
    start = time.monotonic()
    end = start + duration
    try:
        while sent < max_count:
            now = time.monotonic()
            if now >= end:
                break
            due = min(max_count, int((now - start) * rate) + 1)
            while sent < due:
                try:
                    sockets[sent % n_sockets].sendto(packets[sent % n_packets], target)
                except (BlockingIOError, OSError):
                    errors += 1
                sent += 1
            for key, _ in selector.select(0):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                for _ in range(64):
                    try:
                        data = ready.recv(65535)
                    except (BlockingIOError, OSError):
                        break
                    replies += 1
                    reply_types[data[0] if data else -1] += 1
            time.sleep(0.0005)
    finally:
        seconds = time.monotonic() - start
        selector.close()
        for sock in sockets:
            sock.close()
    return {
        "sent": sent,
        "seconds": round(seconds, 3),
        "rate": round((sent - errors) / seconds, 1) if seconds > 0 else 0.0,
        "send_errors": errors,
        "replies": replies,
        "reply_types": {str(k): v for k, v in sorted(reply_types.items())},
        "sockets": n_sockets,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="attack_tools.py")
    commands = parser.add_subparsers(dest="command", required=True)
    inj = commands.add_parser("inject")
    inj.add_argument("--target", type=_address, required=True)
    inj.add_argument("--packets", required=True)
    inj.add_argument("--repeat", type=int, default=1)
    inj.add_argument("--wait", type=float, default=1.0)
    inj.add_argument("--bind", default="0.0.0.0")
    inj.add_argument("--interval", type=float, default=0.0)
    fl = commands.add_parser("flood")
    fl.add_argument("--target", type=_address, required=True)
    fl.add_argument("--packets", required=True)
    fl.add_argument("--rate", type=float, required=True)
    fl.add_argument("--duration", type=float, required=True)
    fl.add_argument("--max-count", type=int, default=1_000_000)
    fl.add_argument("--source", action="append", default=[])
    fl.add_argument("--ports-per-source", type=int, default=4)
    args = parser.parse_args(argv)
    packets = read_packets(args.packets)
    if not packets:
        parser.error(f"{args.packets} holds no packets")
    if args.command == "inject":
        result = inject(args.target, packets, args.repeat, args.wait, args.bind, args.interval)
    else:
        if not 0 < args.duration <= 120 or not 0 < args.rate <= 1_000_000:
            parser.error("--duration must be in (0, 120] s and --rate in (0, 1e6]")
        print("flooding", flush=True)
        result = flood(
            args.target,
            packets,
            args.rate,
            args.duration,
            args.max_count,
            args.source or ["0.0.0.0"],
            args.ports_per_source,
        )
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
