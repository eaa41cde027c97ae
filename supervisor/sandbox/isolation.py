"""``check-isolation``: attack the sandbox from inside, as the agent, and report what holds.

Every check is a small function returning a ``Check``; none of them sends traffic beyond
loopback except to addresses the operator lists with ``--expect-blocked``. Imports stay
light (``rich`` only for the human table) because this runs inside every sandbox.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass

from supervisor.sandbox import filter_marks
from supervisor.settings import SetupError

BUILTIN_SOCKETS = (
    "/spiffe-workload-api/spire-agent.sock",
    "/run/spire/sockets/agent.sock",
    "/run/spire/agent-sockets/spire-agent.sock",
    "/tmp/spire-agent/public/api.sock",  # noqa: S108 - a well-known path we probe, not a temp file
)
CAP_FIELDS = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb")
CONNECT_TIMEOUT = 1.0
PROXY_TIMEOUT = 5.0
_MAX_DETAIL_ITEMS = 8
_PROBE_HOST = "check-isolation.invalid"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def _summarize(items: Sequence[str]) -> str:
    shown = ", ".join(items[:_MAX_DETAIL_ITEMS])
    more = len(items) - _MAX_DETAIL_ITEMS
    return shown + (f" (+{more} more)" if more > 0 else "")


def _pids(proc: str) -> list[int]:
    return sorted(int(name) for name in os.listdir(proc) if name.isdigit())


def _status(proc: str, pid: int | str) -> dict[str, str]:
    fields: dict[str, str] = {}
    with open(f"{proc}/{pid}/status", encoding="utf-8", errors="replace") as f:
        for line in f:
            key, sep, value = line.partition(":")
            if sep:
                fields[key] = value.strip()
    return fields


def _is_supervisor_var(name: str, value: str) -> bool:
    upper = name.upper()
    if upper == "OPENSHELL_SANDBOX" and name == upper and value == "1":
        return False
    return upper.startswith(("SPIFFE_", "OPENSHELL_"))


def check_environment(env: Mapping[str, str]) -> Check:
    bad = sorted(name for name, value in env.items() if _is_supervisor_var(name, value))
    if bad:
        return Check(
            "environment", False, f"supervisor/SPIFFE variables visible: {_summarize(bad)}"
        )
    return Check(
        "environment", True, "no SPIFFE or supervisor variables (OPENSHELL_SANDBOX=1 only)"
    )


def _reachable(path: str) -> str | None:
    """How ``path`` is reachable ('stat' or 'connect'), or None."""
    try:
        os.stat(path)
    except OSError:
        pass
    else:
        return "stat"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(path)
        except (OSError, ValueError):
            return None
    return "connect"


def socket_candidates(spiffe_socket: str | None) -> tuple[list[str], list[str]]:
    """(paths to probe, problems with the given address)."""
    paths = list(BUILTIN_SOCKETS)
    problems: list[str] = []
    if spiffe_socket:
        from supervisor.sandbox.socket_path import parse_socket_address

        try:
            given = parse_socket_address(spiffe_socket)
        except SetupError as exc:
            problems.append(f"cannot check {spiffe_socket!r}: {exc.reason}")
        else:
            if given not in paths:
                paths.insert(0, given)
    return paths, problems


def check_workload_socket(spiffe_socket: str | None, proc: str = "/proc") -> Check:
    paths, problems = socket_candidates(spiffe_socket)
    roots = [""] + [f"{proc}/{pid}/root" for pid in _pids(proc)]
    visible = [
        f"{root}{path} ({how})"
        for path in paths
        for root in roots
        if (how := _reachable(f"{root}{path}")) is not None
    ]
    if visible or problems:
        return Check("workload-api-socket", False, _summarize(problems + visible))
    return Check(
        "workload-api-socket",
        True,
        f"{len(paths)} paths unreachable directly and through {len(roots) - 1} /proc/<pid>/root",
    )


def check_proc_environ(proc: str = "/proc") -> Check:
    me = os.getpid()
    exposed: list[str] = []
    unreadable = 0
    for pid in _pids(proc):
        if pid == me:
            continue
        try:
            with open(f"{proc}/{pid}/environ", "rb") as f:
                raw = f.read()
        except OSError:
            unreadable += 1
            continue
        for entry in raw.split(b"\0"):
            name, sep, value = entry.decode("utf-8", "replace").partition("=")
            if sep and _is_supervisor_var(name, value):
                exposed.append(f"pid {pid}: {name}")
    if exposed:
        return Check("proc-environ", False, f"readable secrets: {_summarize(sorted(set(exposed)))}")
    return Check(
        "proc-environ", True, f"no readable SPIFFE/supervisor variables ({unreadable} unreadable)"
    )


def check_capabilities(status: Mapping[str, str]) -> Check:
    nonzero = [f"{n}={status.get(n, '?')}" for n in CAP_FIELDS if status.get(n, "1").strip("0")]
    if nonzero:
        return Check("capabilities", False, "non-empty: " + ", ".join(nonzero))
    return Check("capabilities", True, "CapInh/CapPrm/CapEff/CapBnd/CapAmb all zero")


def check_no_new_privs(status: Mapping[str, str]) -> Check:
    value = status.get("NoNewPrivs", "?")
    return Check("no-new-privs", value == "1", f"NoNewPrivs={value}")


@dataclass(frozen=True)
class FilterProbe:
    """errnos (0 = the call ran) of unshare(0), a no-op the agent filter refuses with EPERM,
    and of the agent filter's marker prctl (supervisor.sandbox.filter_marks)."""

    unshare: int
    mark: int


def _probe_filter() -> FilterProbe:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    unshare = 0 if libc.unshare(0) == 0 else ctypes.get_errno()
    ran = libc.prctl(ctypes.c_int(filter_marks.MARK_PRCTL_OPTION), ctypes.c_ulong(0),
                     ctypes.c_ulong(0), ctypes.c_ulong(0), ctypes.c_ulong(0))
    return FilterProbe(unshare=unshare, mark=0 if ran == 0 else ctypes.get_errno())


def check_seccomp(
    status: Mapping[str, str], probe: Callable[[], FilterProbe] = _probe_filter
) -> Check:
    """The agent filter itself is in force: any filter refusing unshare (a container
    runtime's default profile does) is not enough; its marker must answer."""
    mode = status.get("Seccomp", "?")
    found = probe()
    marked = found.mark == filter_marks.MARK_ERRNO
    err = found.unshare
    outcome = "refused (EPERM)" if err == errno.EPERM else (os.strerror(err) if err else "ran")
    which = "the agent filter (its mark answers)" if marked else (
        "not the agent filter (its mark is missing)"
    )
    detail = f"Seccomp={mode}, {which}, unshare(0) {outcome}"
    return Check("seccomp", mode == "2" and marked and err == errno.EPERM, detail)


# Families the agent must not open (name, family, type, protocol): vsock reaches the
# hypervisor whatever the network namespace; the others are kernel surface it never needs.
FAMILY_PROBES = (
    ("vsock", 40, socket.SOCK_STREAM, 0),
    ("packet", 17, socket.SOCK_DGRAM, 0),
    ("bluetooth", 31, socket.SOCK_STREAM, 0),
    ("netlink sock_diag", 16, socket.SOCK_RAW, 4),
    ("netlink uevent", 16, socket.SOCK_RAW, 15),
)


def _opens(family: int, kind: int, proto: int) -> bool:
    try:
        socket.socket(family, kind, proto).close()
    except OSError:
        return False
    return True


def check_socket_families(
    opens: Callable[[int, int, int], bool] = _opens,
) -> Check:
    """Sockets of unneeded address families cannot be created (no traffic is sent)."""
    opened = [name for name, family, kind, proto in FAMILY_PROBES if opens(family, kind, proto)]
    if opened:
        return Check("socket-families", False, f"could open: {', '.join(opened)}")
    names = ", ".join(name for name, *_ in FAMILY_PROBES)
    return Check("socket-families", True, f"cannot open {names}")


def check_not_root(status: Mapping[str, str]) -> Check:
    uids = status.get("Uid", "0").split()
    gids = status.get("Gid", "?").split()
    ok = bool(uids) and "0" not in uids
    return Check("not-root", ok, f"uids {'/'.join(uids)}, gids {'/'.join(gids)}")


def _interfaces(proc: str) -> list[str]:
    with open(f"{proc}/net/dev", encoding="ascii", errors="replace") as f:
        lines = f.read().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def _route_devices(proc: str) -> list[str]:
    devices: set[str] = set()
    with contextlib.suppress(OSError), open(f"{proc}/net/route", encoding="ascii") as f:
        devices.update(line.split()[0] for line in f.read().splitlines()[1:] if line.strip())
    with contextlib.suppress(OSError), open(f"{proc}/net/ipv6_route", encoding="ascii") as f:
        devices.update(line.split()[-1] for line in f.read().splitlines() if line.strip())
    return sorted(devices - {"lo"})


def _sysfs_interfaces(sysfs: str) -> list[str] | None:
    """Names in <sysfs>/class/net, or None when there is no such view (an empty /sys)."""
    try:
        return sorted(os.listdir(f"{sysfs}/class/net"))
    except FileNotFoundError:
        return None


def check_interfaces(proc: str = "/proc", sysfs: str = "/sys") -> Check:
    """Only lo, in /proc/net and in /sys/class/net (a host sysfs would list the host's)."""
    names = _interfaces(proc)
    routed = _route_devices(proc)
    in_sysfs = _sysfs_interfaces(sysfs)
    sysfs_ok = in_sysfs is None or in_sysfs == ["lo"]
    if names != ["lo"] or routed or not sysfs_ok:
        detail = f"interfaces {names}" + (f", routes via {routed}" if routed else "")
        if not sysfs_ok:
            detail += f", {sysfs}/class/net lists {_summarize(in_sysfs or [])}"
        return Check("interfaces", False, detail)
    seen = "no /sys/class/net" if in_sysfs is None else "/sys/class/net: lo"
    return Check("interfaces", True, f"only lo ({seen}), no routes off the host")


def _listeners(proc: str) -> list[tuple[str, int, str]]:
    """Listening TCP sockets of this network namespace: (address, port, inode)."""
    found: list[tuple[str, int, str]] = []
    for name, family in (("tcp", socket.AF_INET), ("tcp6", socket.AF_INET6)):
        try:
            with open(f"{proc}/net/{name}", encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != "0A":
                continue
            addr_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(addr_hex)
            # /proc/net/tcp* prints each 32-bit word in host (little-endian) order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.append((socket.inet_ntop(family, packed), int(port_hex, 16), fields[9]))
    return found


def _own_socket_inodes(proc: str) -> set[str]:
    inodes: set[str] = set()
    for pid in _pids(proc):
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"{proc}/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"{proc}/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    return inodes


def _connects(host: str, port: int) -> bool:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return False
    for family, kind, proto, _, sockaddr in infos:
        with socket.socket(family, kind, proto) as s:
            s.settimeout(CONNECT_TIMEOUT)
            try:
                s.connect(sockaddr)
            except OSError:
                continue
            return True
    return False


def _proxy_address(env: Mapping[str, str]) -> tuple[str, int] | None:
    url = env.get("HTTP_PROXY") or env.get("http_proxy") or ""
    match = re.fullmatch(r"http://(\[[^\]]+\]|[^:/]+):(\d+)/?", url)
    if not match:
        return None
    return match.group(1).strip("[]"), int(match.group(2))


def _is_proxy(address: str, port: int, proxy: tuple[str, int] | None) -> bool:
    """Exactly the proxy's address and port: another listener on the same port (on
    127.0.0.2, or on all addresses) is somebody else's."""
    if proxy is None or port != proxy[1]:
        return False
    import ipaddress

    try:
        return ipaddress.ip_address(address) == ipaddress.ip_address(proxy[0])
    except ValueError:
        return False


def check_loopback_listeners(env: Mapping[str, str], proc: str = "/proc") -> Check:
    """No listener of this network namespace may exist outside the sandbox but the proxy.

    A listener in our namespace that no sandbox process owns belongs to someone outside
    and is directly connectable; reporting it (rather than connecting to it) avoids poking
    unknown services when this runs outside a sandbox.
    """
    proxy = _proxy_address(env)
    own = _own_socket_inodes(proc)
    outside = [
        f"{address}:{port}"
        for address, port, inode in _listeners(proc)
        if inode not in own and not _is_proxy(address, port, proxy)
    ]
    if outside:
        return Check(
            "direct-loopback", False, f"listeners outside the sandbox: {_summarize(outside)}"
        )
    return Check("direct-loopback", True, "no listener outside the sandbox besides the proxy")


def parse_host_port(spec: str) -> tuple[str, int]:
    host, sep, port = spec.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"expected HOST:PORT, got {spec!r}")
    return host.strip("[]"), int(port)


def check_expect_blocked(spec: str) -> Check:
    name = f"blocked {spec}"
    try:
        host, port = parse_host_port(spec)
    except ValueError as exc:
        return Check(name, False, str(exc))
    if _connects(host, port):
        return Check(name, False, "direct connection succeeded")
    return Check(name, True, "direct connection failed")


def check_proxy(env: Mapping[str, str]) -> Check:
    proxy = _proxy_address(env)
    if proxy is None:
        return Check("proxy", False, "HTTP_PROXY is not set to http://HOST:PORT")
    request = (
        f"GET http://{_PROBE_HOST}/ HTTP/1.1\r\nHost: {_PROBE_HOST}\r\nConnection: close\r\n\r\n"
    ).encode()
    try:
        with socket.create_connection(proxy, timeout=PROXY_TIMEOUT) as s:
            s.sendall(request)
            head = s.recv(64)
    except OSError as exc:
        return Check("proxy", False, f"{proxy[0]}:{proxy[1]}: {exc}")
    if head.startswith(b"HTTP/1."):
        status = head.split(b"\r\n", 1)[0].decode("ascii", "replace")
        return Check("proxy", True, f"{proxy[0]}:{proxy[1]} answers ({status})")
    return Check("proxy", False, f"{proxy[0]}:{proxy[1]} did not answer HTTP")


def check_processes(proc: str = "/proc") -> Check:
    """Only this PID namespace's processes, all of the sandbox's uid, PID 1 being its init."""
    problems: list[str] = []
    try:
        if os.readlink(f"{proc}/self") != str(os.getpid()):
            problems.append(f"{proc} belongs to another PID namespace")
    except OSError as exc:
        problems.append(f"{proc}/self: {exc.strerror}")
    my_uid = str(os.getuid())
    seen_init = False
    for pid in _pids(proc):
        try:
            status = _status(proc, pid)
        except OSError:
            continue  # exited meanwhile
        uid = status.get("Uid", "?").split()[0]
        name = status.get("Name", "?")
        if pid == 1:
            seen_init = uid == my_uid
        if uid != my_uid or (status.get("PPid") == "0" and pid != 1):
            problems.append(f"pid {pid} ({name}, uid {uid})")
    if not seen_init:
        problems.append("PID 1 is not the sandbox's init")
    if problems:
        return Check("processes", False, f"outside the sandbox: {_summarize(problems)}")
    return Check("processes", True, "only sandbox processes visible, PID 1 is its init")


# The paths supervisor.sandbox.agentfs masks (a copy: importing agentfs would load ctypes
# and the mount wrappers into every check-isolation run; a test keeps the copies equal).
MASKED_FILES = (
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/sysrq-trigger",
    "/proc/kallsyms",
)
READ_ONLY_DIRS = ("/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq")
EMPTY_DIRS = (
    "/proc/acpi",
    "/proc/scsi",
    "/proc/asound",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)


def _reads_nothing(path: str) -> bool:
    """True when ``path`` reads as empty or cannot be opened or read at all."""
    try:
        with open(path, "rb", buffering=0) as f:
            return f.read(1) == b""
    except OSError:
        return True


def _masked_file_problem(path: str, proc_dev: int) -> str | None:
    """Why ``path`` is not masked, or None (it is masked, or absent).

    Asks the kernel rather than parsing /proc/self/mountinfo: a mount there may be one
    covered by a later /proc mount, which the agent cannot reach."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    if st.st_dev == proc_dev:
        return f"{path} is procfs's own file"
    if not _reads_nothing(path):
        return f"{path} is mounted over but readable"
    return None


def _empty_dir_problem(path: str) -> str | None:
    try:
        names = os.listdir(path)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return f"{path} lists {_summarize(sorted(names))}" if names else None


def _read_only_problem(path: str) -> str | None:
    try:
        flags = os.statvfs(path).f_flag
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path}: {exc.strerror}"
    return None if flags & os.ST_RDONLY else f"{path} is mounted read-write"


def check_masked_paths(proc: str = "/proc") -> Check:
    """The kernel files and directories runtimes mask are masked in the agent's fresh
    /proc and /sys, and /proc/sys (with /proc/bus, /proc/fs, /proc/irq) is read-only."""
    proc_dev = os.stat(proc).st_dev
    problems = [p for path in MASKED_FILES if (p := _masked_file_problem(path, proc_dev))]
    problems += [p for path in READ_ONLY_DIRS if (p := _read_only_problem(path))]
    problems += [p for path in EMPTY_DIRS if (p := _empty_dir_problem(path))]
    if problems:
        return Check("masked-paths", False, _summarize(problems))
    masked = sum(os.path.lexists(path) for path in MASKED_FILES)
    return Check(
        "masked-paths",
        True,
        f"{masked} kernel files masked, /proc/sys read-only, firmware/ACPI views empty",
    )


def check_landlock(expect: bool = False) -> Check:
    from supervisor.sandbox.landlock_check import landlock_status

    ok, detail = landlock_status(expect)
    return Check("landlock", ok, detail)


def run_checks(spiffe_socket: str | None, expect_blocked: Iterable[str],
               expect_landlock: bool = False) -> list[Check]:
    env = dict(os.environ)
    checks = [check_environment(env), check_workload_socket(spiffe_socket), check_proc_environ()]
    try:
        status = _status("/proc", "self")
    except OSError as exc:
        status = {}
        checks.append(Check("proc-status", False, str(exc)))
    checks += [check_capabilities(status), check_no_new_privs(status), check_seccomp(status)]
    checks.append(check_not_root(status))
    named_checks: tuple[tuple[str, Callable[[], Check]], ...] = (
        ("interfaces", check_interfaces),
        ("processes", check_processes),
        ("masked-paths", check_masked_paths),
        ("landlock", lambda: check_landlock(expect_landlock)),
    )
    for name, func in named_checks:
        try:
            checks.append(func())
        except OSError as exc:
            checks.append(Check(name, False, str(exc)))
    checks.append(check_socket_families())
    checks.append(check_loopback_listeners(env))
    checks += [check_expect_blocked(spec) for spec in expect_blocked]
    checks.append(check_proxy(env))
    return checks


def _print_table(checks: list[Check]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="openshell-supervisor isolation checks")
    table.add_column("check")
    table.add_column("result")
    table.add_column("detail", overflow="fold")
    for c in checks:
        table.add_row(c.name, "[green]ok[/green]" if c.ok else "[red]FAIL[/red]", c.detail)
    Console().print(table)


def check_isolation_command(
    as_json: bool, spiffe_socket: str | None, expect_blocked: Sequence[str],
    expect_landlock: bool = False,
) -> int:
    checks = run_checks(spiffe_socket, expect_blocked, expect_landlock)
    ok = all(c.ok for c in checks)
    if as_json:
        print(json.dumps({"ok": ok, "checks": [asdict(c) for c in checks]}))
    else:
        _print_table(checks)
    return 0 if ok else 1
