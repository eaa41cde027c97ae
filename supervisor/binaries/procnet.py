"""``/proc/net/tcp`` and ``tcp6`` lines -> socket inodes. Pure: no I/O here.

A line: ``sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode ...``
with addresses as ``HEXIP:HEXPORT``. IPv4 is one 32-bit word, IPv6 four, each word in the
kernel's (host, here little-endian) byte order; ports are big-endian hex. IPv4-mapped IPv6
addresses (a dual-stack client) compare equal to their IPv4 form.
"""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Iterable

from supervisor.record import record

ESTABLISHED = 0x01
Address = tuple[str, int]  # (ip text in canonical form, port)


@record
class TcpEntry:
    local: Address
    remote: Address
    state: int
    uid: int
    inode: int


def _words(hexip: str) -> bytes:
    raw = bytes.fromhex(hexip)
    if sys.byteorder == "big":
        return raw
    return b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))


def canonical_ip(ip: str) -> str:
    """Text form used for comparisons: IPv4-mapped IPv6 becomes the IPv4 address."""
    addr = ipaddress.ip_address(ip)
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


def parse_address(field: str) -> Address:
    hexip, sep, hexport = field.partition(":")
    if not sep or len(hexip) not in (8, 32):
        raise ValueError(f"bad address field {field!r}")
    packed = _words(hexip)
    ip = ipaddress.ip_address(packed)
    port = int(hexport, 16)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"bad port in {field!r}")
    return canonical_ip(str(ip)), port


def parse_line(line: str) -> TcpEntry | None:
    """One table line; None for the header and for anything malformed."""
    parts = line.split()
    if len(parts) < 10 or not parts[0].endswith(":") or not parts[0][:-1].isdigit():
        return None
    try:
        # Positional (local, remote, state, uid, inode): a record's quickest call.
        return TcpEntry(parse_address(parts[1]), parse_address(parts[2]), int(parts[3], 16),
                        int(parts[7]), int(parts[9]))  # fmt: skip
    except ValueError:
        return None


def _encodings(ip: str) -> list[str]:
    """The hex forms an address can take in the tables: IPv4 in ``tcp`` and, mapped, in
    ``tcp6``; IPv6 in ``tcp6``."""
    addr = ipaddress.ip_address(canonical_ip(ip))
    forms = [_hex(addr.packed)]
    if isinstance(addr, ipaddress.IPv4Address):
        forms.append(_hex(ipaddress.IPv6Address(f"::ffff:{addr}").packed))
    return forms


def _hex(packed: bytes) -> str:
    if sys.byteorder != "big":
        packed = b"".join(packed[i : i + 4][::-1] for i in range(0, len(packed), 4))
    return packed.hex().upper()


def find_inode(lines: Iterable[str], local: Address, remote: Address) -> int | None:
    """The inode of the established socket whose own address is ``local`` and whose peer
    is ``remote`` (for the agent's socket: local = the client, remote = the proxy).

    A table can hold thousands of lines (a busy host's namespace): each line is first
    tested for the pair's literal text, and only a hit is parsed."""
    keys = [f"{lh}:{local[1]:04X} {rh}:{remote[1]:04X}"
            for lh in _encodings(local[0]) for rh in _encodings(remote[0])
            if len(lh) == len(rh)]
    for line in lines:
        if not any(key in line for key in keys):
            continue
        entry = parse_line(line)
        if (entry is not None and entry.state == ESTABLISHED and entry.inode != 0
                and entry.local == (canonical_ip(local[0]), local[1])
                and entry.remote == (canonical_ip(remote[0]), remote[1])):
            return entry.inode
    return None


def format_address(ip: str, port: int) -> str:
    """The table's encoding of an address (the inverse of ``parse_address``; for tests)."""
    return f"{_hex(ipaddress.ip_address(ip).packed)}:{port:04X}"
