"""/proc/net/tcp parsing and binary globs: properties (hypothesis) and examples."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from supervisor.binaries import globs, procnet

ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


def line(local: tuple[str, int], remote: tuple[str, int], state: int = 1, inode: int = 4242,
         sl: int = 0) -> str:
    return (f"  {sl}: {procnet.format_address(*local)} {procnet.format_address(*remote)} "
            f"{state:02X} 00000000:00000000 00:00000000 00000000 65534 0 {inode} 1 "
            "0000000000000000 20 4 30 10 -1")


@given(st.one_of(ipv4, ipv6), ports)
def test_address_roundtrip(ip: str, port: int) -> None:
    assert procnet.parse_address(procnet.format_address(ip, port)) == (
        procnet.canonical_ip(ip), port)


def test_known_kernel_encoding() -> None:
    # 127.0.0.1:3128 as the kernel prints it on little-endian machines
    assert procnet.parse_address("0100007F:0C38") == ("127.0.0.1", 3128)
    mapped = "0000000000000000FFFF00000100007F:0C38"
    assert procnet.parse_address(mapped) == ("127.0.0.1", 3128)


@given(st.lists(st.tuples(ipv4, ports, ipv4, ports, st.integers(1, 11),
                          st.integers(1, 2**32)), max_size=20),
       ipv4, ports, ports, st.integers(1, 2**32))
def test_find_inode_picks_the_established_pair(
    noise: list[tuple[str, int, str, int, int, int]], ip: str, cport: int, pport: int,
    inode: int,
) -> None:
    lines = ["  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
             "   uid  timeout inode"]
    client, proxy = (ip, cport), ("127.0.0.1", pport)
    noise = [n for n in noise if not ((n[0], n[1]) == client and (n[2], n[3]) == proxy)]
    lines += [line((a, b), (c, d), state, ino, i) for i, (a, b, c, d, state, ino)
              in enumerate(noise)]
    # The proxy's own accepted socket (addresses swapped) and a closing one: never picked.
    lines.append(line(proxy, client, 1, inode + 1))
    lines.append(line(client, proxy, 6, inode + 2))
    assert procnet.find_inode(lines, client, proxy) is None
    lines.insert(len(lines) // 2, line(client, proxy, 1, inode))
    assert procnet.find_inode(lines, client, proxy) == inode


@given(st.text(max_size=200))
def test_parse_line_never_raises(text: str) -> None:
    procnet.parse_line(text)


def test_ipv4_mapped_client_matches_ipv4() -> None:
    mapped = str(ipaddress.IPv6Address("::ffff:127.0.0.1"))
    lines = [line((mapped, 5000), (mapped, 3128), 1, 77)]
    assert procnet.find_inode(lines, ("127.0.0.1", 5000), ("127.0.0.1", 3128)) == 77


components = st.text(alphabet="abcxyz.-_", min_size=1, max_size=6).filter(
    lambda c: c not in (".", ".."))
paths = st.lists(components, min_size=1, max_size=5).map(lambda cs: "/" + "/".join(cs))


@given(paths)
def test_literal_pattern_matches_only_itself(path: str) -> None:
    assert globs.matches(path, path)
    assert not globs.matches(path, path + "x")
    assert not globs.matches(path, path + "/x")


@given(st.lists(components, min_size=2, max_size=5))
def test_star_is_one_component_and_double_star_any(parts: list[str]) -> None:
    path = "/" + "/".join(parts)
    parent = "/" + "/".join(parts[:-1])
    assert globs.matches(parent + "/*", path)
    assert globs.matches("/**", path)
    assert globs.matches("/" + parts[0] + "/**", path)
    if len(parts) > 2:
        assert not globs.matches("/" + parts[0] + "/*", path)


def test_glob_examples() -> None:
    assert globs.matches("/sandbox/.uv/python/**/python3*", "/sandbox/.uv/python/3.12/bin/python3.12")
    assert globs.matches("/home/*/.local/bin/copilot", "/home/me/.local/bin/copilot")
    assert not globs.matches("/home/*/.local/bin/copilot", "/home/a/b/.local/bin/copilot")
    assert globs.matches("/usr/lib/node_modules/@openai/**", "/usr/lib/node_modules/@openai/codex/bin/x")
    assert globs.literal_prefix("/usr/lib/*/bin") == "/usr/lib"
    assert globs.literal_prefix("/usr/bin/curl") == "/usr/bin/curl"


def test_symlinked_policy_path_is_resolved(tmp_path) -> None:  # type: ignore[no-untyped-def]
    real = tmp_path / "real"
    real.mkdir()
    (real / "tool").write_text("")
    (tmp_path / "link").symlink_to(real)
    resolved = globs.with_resolved([f"{tmp_path}/link/tool", f"{tmp_path}/link/*"])
    assert f"{real}/tool" in resolved and f"{real}/*" in resolved
    assert f"{tmp_path}/link/tool" in resolved
