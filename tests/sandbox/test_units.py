"""Pure pieces of the sandbox: environment scrub, init protocol, privilege verification,
and check-isolation's parsers."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from supervisor.sandbox import isolation
from supervisor.sandbox.environment import agent_environment
from supervisor.sandbox.privileges import PrivilegeError, verify_dropped
from supervisor.sandbox.protocol import exit_code_of, parse_report


def test_environment_scrubbed_and_proxy_added() -> None:
    inherited = {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "SPIFFE_ENDPOINT_SOCKET": "unix:///run/spire/agent.sock",
        "OPENSHELL_PROVIDER_SPIFFE_WORKLOAD_API_SOCKET": "/x",
        "OPENSHELL_SANDBOX_TOKEN": "secret",
        "OPENSHELL_TLS_KEY": "secret",
        "openshell_lower": "secret",
        "Http_Proxy": "http://corp:8080",
        "ALL_PROXY": "socks5://corp",
        "no_proxy": "corp",
        "FTP_PROXY": "x",
    }
    env = agent_environment(inherited, 3128, {"SSL_CERT_FILE": "/ca.pem"})
    assert env == {
        "PATH": "/usr/bin",
        "HOME": "/root",
        "HTTP_PROXY": "http://127.0.0.1:3128",
        "HTTPS_PROXY": "http://127.0.0.1:3128",
        "http_proxy": "http://127.0.0.1:3128",
        "https_proxy": "http://127.0.0.1:3128",
        "NO_PROXY": "localhost,127.0.0.1,::1",
        "no_proxy": "localhost,127.0.0.1,::1",
        "OPENSHELL_SANDBOX": "1",
        "SSL_CERT_FILE": "/ca.pem",
    }

def test_environment_refuses_forbidden_extra() -> None:
    with pytest.raises(ValueError, match="SPIFFE_ENDPOINT_SOCKET"):
        agent_environment({}, 1, {"SPIFFE_ENDPOINT_SOCKET": "/x"})

@pytest.mark.parametrize(("status", "code"), [(0, 0), (7 << 8, 7), (255 << 8, 255),
                                               (signal.SIGKILL, 137), (signal.SIGTERM, 143)])
def test_exit_code_of(status: int, code: int) -> None:
    assert exit_code_of(status) == code

def test_parse_report() -> None:
    report = parse_report(
        b'{"kind": "exec", "code": 127, "reason": "command not found"}\n'
        b'not json\n{"kind": "exit", "status": 256}\n'
    )
    assert (report.exec_code, report.exec_reason, report.agent_status) == (127, "command not found", 256)
    assert report.garbage == ["not json"]

GOOD = {f: "0000000000000000" for f in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")}
GOOD |= {"NoNewPrivs": "1", "Uid": "65534\t65534\t65534\t65534"}

def test_verify_dropped_accepts_clean_status() -> None:
    verify_dropped(65534, dict(GOOD))

@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("CapBnd", "0000000000000400", "CapBnd"),
        ("CapInh", "0000000000000001", "CapInh"),
        ("CapAmb", "0000000000000001", "CapAmb"),
        ("NoNewPrivs", "0", "no_new_privs"),
        ("Uid", "65534\t0\t65534\t65534", "uids"),
    ],
)
def test_verify_dropped_fails_closed(field: str, value: str, message: str) -> None:
    with pytest.raises(PrivilegeError, match=message):
        verify_dropped(65534, GOOD | {field: value})

def test_verify_dropped_missing_field_fails() -> None:
    status = dict(GOOD)
    del status["CapAmb"]
    with pytest.raises(PrivilegeError, match="CapAmb"):
        verify_dropped(65534, status)

def test_check_environment() -> None:
    assert isolation.check_environment({"OPENSHELL_SANDBOX": "1", "PATH": "/bin"}).ok
    for bad in ({"SPIFFE_ENDPOINT_SOCKET": "x"}, {"OPENSHELL_SANDBOX": "0"},
                {"OPENSHELL_TLS_KEY": "k"}, {"spiffe_endpoint_socket": "x"}):
        check = isolation.check_environment(bad)
        assert not check.ok and next(iter(bad)) in check.detail

def test_check_capabilities_and_nnp() -> None:
    assert isolation.check_capabilities(GOOD).ok
    assert not isolation.check_capabilities(GOOD | {"CapBnd": "000001ffffffffff"}).ok
    assert not isolation.check_capabilities({}).ok
    assert isolation.check_no_new_privs(GOOD).ok
    assert not isolation.check_no_new_privs({"NoNewPrivs": "0"}).ok
    assert isolation.check_not_root(GOOD).ok
    assert not isolation.check_not_root({"Uid": "1000\t0\t1000\t1000"}).ok

def test_parse_host_port() -> None:
    assert isolation.parse_host_port("127.0.0.1:80") == ("127.0.0.1", 80)
    assert isolation.parse_host_port("[::1]:443") == ("::1", 443)
    with pytest.raises(ValueError):
        isolation.parse_host_port("nohost")

def test_socket_candidates() -> None:
    paths, problems = isolation.socket_candidates("unix:///srv/spire/a.sock")
    assert paths[0] == "/srv/spire/a.sock" and set(isolation.BUILTIN_SOCKETS) <= set(paths)
    assert not problems
    _, problems = isolation.socket_candidates("tcp://127.0.0.1:1")
    assert problems

def _fake_proc(root: Path, tcp: str, dev: str, route: str = "Iface\tDestination\n") -> str:
    (root / "net").mkdir(parents=True)
    (root / "net" / "tcp").write_text(tcp)
    (root / "net" / "dev").write_text(dev)
    (root / "net" / "route").write_text(route)
    return str(root)

TCP_HEADER = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
DEV_HEADER = "Inter-|   Receive\n face |bytes\n"

def test_listeners_parsed_and_proxy_excluded(tmp_path: Path) -> None:
    tcp = TCP_HEADER + (
        "   0: 0100007F:0C38 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 111 1\n"
        "   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000  0 0 222 1\n"
        "   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  0 0 333 1\n"
    )
    proc = _fake_proc(tmp_path, tcp, DEV_HEADER + "    lo: 0 0\n")
    assert isolation._listeners(proc) == [("127.0.0.1", 3128, "111"), ("0.0.0.0", 22, "222")]
    check = isolation.check_loopback_listeners({"HTTP_PROXY": "http://127.0.0.1:3128"}, proc)
    assert not check.ok and "0.0.0.0:22" in check.detail and "3128" not in check.detail
    # Only the proxy's exact address is exempt: the same port elsewhere is somebody else's.
    check = isolation.check_loopback_listeners({"HTTP_PROXY": "http://127.0.0.2:3128"}, proc)
    assert "127.0.0.1:3128" in check.detail
    assert not isolation._is_proxy("0.0.0.0", 3128, ("127.0.0.1", 3128))
    assert not isolation._is_proxy("x", 3128, ("127.0.0.1", 3128))
    assert isolation._is_proxy("::1", 3128, ("::1", 3128))

def _fake_sys(root: Path, *names: str) -> str:
    for name in names:
        (root / "class" / "net" / name).mkdir(parents=True)
    return str(root)

def test_interfaces(tmp_path: Path) -> None:
    proc = _fake_proc(tmp_path / "a", TCP_HEADER, DEV_HEADER + "    lo: 0 0\n")
    assert isolation.check_interfaces(proc, _fake_sys(tmp_path / "sys-a", "lo")).ok
    # The fallback view (an empty /sys) shows nothing of the host either.
    assert isolation.check_interfaces(proc, str(tmp_path / "no-sys")).ok
    check = isolation.check_interfaces(proc, _fake_sys(tmp_path / "sys-b", "lo", "eth0"))
    assert not check.ok and "class/net lists eth0, lo" in check.detail
    proc = _fake_proc(tmp_path / "b", TCP_HEADER, DEV_HEADER + "    lo: 0\n  eth0: 0\n",
                      "Iface\tDestination\neth0\t00000000\n")
    check = isolation.check_interfaces(proc, _fake_sys(tmp_path / "sys-c", "lo"))
    assert not check.ok and "eth0" in check.detail

def test_proxy_check_without_proxy_variable() -> None:
    assert not isolation.check_proxy({}).ok
