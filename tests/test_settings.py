"""`--user USER[:GROUP]` parsing: names and numbers, groups, and root always refused."""

from __future__ import annotations

import grp
import pwd

import pytest
from hypothesis import given
from hypothesis import strategies as st

from supervisor.settings import MAX_ID, SetupError, parse_user

# A small, fixed user database (the machine's own varies): uid 0 is root, 1000 is "dev"
# (primary group 1000, member of "docker" and "audio"), 65534 is "nobody".
USERS = {
    "root": (0, 0),
    "dev": (1000, 1000),
    "nobody": (65534, 65534),
}
GROUPS = {"root": (0, []), "dev": (1000, []), "docker": (999, ["dev"]), "audio": (29, ["dev", "x"]),
          "nogroup": (65534, []), "staff": (50, [])}


def _passwd(name: str, uid: int, gid: int) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", uid, gid, "", "/", "/bin/false"))


def _group(name: str, gid: int, members: list[str]) -> grp.struct_group:
    return grp.struct_group((name, "x", gid, members))


@pytest.fixture(autouse=True)
def fake_databases(monkeypatch: pytest.MonkeyPatch) -> None:
    def getpwnam(name: str) -> pwd.struct_passwd:
        if "\x00" in name:
            raise ValueError("embedded null character")
        if name not in USERS:
            raise KeyError(name)
        return _passwd(name, *USERS[name])

    def getpwuid(uid: int) -> pwd.struct_passwd:
        for name, (u, g) in USERS.items():
            if u == uid:
                return _passwd(name, u, g)
        raise KeyError(uid)

    def getgrnam(name: str) -> grp.struct_group:
        if "\x00" in name:
            raise ValueError("embedded null character")
        if name not in GROUPS:
            raise KeyError(name)
        return _group(name, *GROUPS[name])

    monkeypatch.setattr(pwd, "getpwnam", getpwnam)
    monkeypatch.setattr(pwd, "getpwuid", getpwuid)
    monkeypatch.setattr(grp, "getgrnam", getgrnam)
    monkeypatch.setattr(grp, "getgrall", lambda: [_group(n, *v) for n, v in GROUPS.items()])


@pytest.mark.parametrize(("spec", "expected"), [
    ("65534:65534", (65534, 65534, ())),        # the default
    ("nobody", (65534, 65534, ())),             # primary group from passwd
    ("dev", (1000, 1000, (29, 999))),           # + supplementary groups, sorted
    ("1000", (1000, 1000, (29, 999))),          # a number with a passwd entry: same as its name
    ("dev:staff", (1000, 50, ())),              # an explicit group: no supplementary groups
    ("dev:7", (1000, 7, ())),
    ("4242", (4242, 4242, ())),                 # no passwd entry: gid = uid
    ("4242:nogroup", (4242, 65534, ())),
    ("nobody:", (65534, 65534, ())),            # empty group = none given
    (f"{MAX_ID}:{MAX_ID}", (MAX_ID, MAX_ID, ())),
])
def test_resolves(spec: str, expected: tuple[int, int, tuple[int, ...]]) -> None:
    assert parse_user(spec) == expected


@pytest.mark.parametrize("spec", ["0", "root", "0:65534", "root:nogroup", "00", "0:0"])
def test_refuses_root(spec: str) -> None:
    with pytest.raises(SetupError) as err:
        parse_user(spec)
    assert err.value.step == "--user"
    assert "uid 0" in err.value.reason


@pytest.mark.parametrize(("spec", "reason"), [
    ("", "empty user"),
    (":65534", "empty user"),
    ("ghost", "no such user 'ghost'"),
    ("nobody:ghosts", "no such group 'ghosts'"),
    ("4294967295", "out of range"),           # (uid_t)-1: set*id(2) would leave the uid as is
    ("65534:4294967295", "out of range"),
    ("99999999999999999999", "out of range"),
    ("²", "no such user"),                    # a Unicode digit is a name, not a number
    ("\uff11\uff12", "no such user"),        # so are full-width digits (int() would read 12)
    ("a\x00b", "no such user"),
    ("nobody:a\x00b", "no such group"),
])
def test_refuses_with_the_field_named(spec: str, reason: str) -> None:
    with pytest.raises(SetupError) as err:
        parse_user(spec)
    assert err.value.step == "--user"
    assert reason in err.value.reason


@given(st.text(max_size=24))
def test_any_spec_resolves_to_a_non_root_identity_or_a_setup_error(spec: str) -> None:
    try:
        uid, gid, groups = parse_user(spec)
    except SetupError as err:
        assert err.step == "--user"
        return
    assert 0 < uid <= MAX_ID
    assert 0 <= gid <= MAX_ID
    assert gid not in groups


@given(st.integers(min_value=0, max_value=2**40), st.integers(min_value=0, max_value=2**40))
def test_numeric_specs(uid: int, gid: int) -> None:
    try:
        result = parse_user(f"{uid}:{gid}")
    except SetupError:
        assert uid == 0 or uid > MAX_ID or gid > MAX_ID
        return
    assert result == (uid, gid, ())
