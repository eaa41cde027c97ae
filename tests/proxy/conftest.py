from __future__ import annotations

import resource
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.proxy.harness import SECRET, Env, FakePolicy, FakeTokens, binding, endpoint


@pytest.fixture(scope="session", autouse=True)
def _fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 8192) if hard != resource.RLIM_INFINITY else 8192
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture
def make_env(tmp_path: Path) -> Iterator[object]:
    """Factory: ``make_env(configure=None, **proxy_kw)``; the default policy declares the
    upstream on 127.0.0.1 with a bearer binding on /headers and /upload paths' host.
    Every environment's audit log is checked for the token at teardown."""
    envs: list[Env] = []

    def make(*, bind: bool = True, tokens: FakeTokens | None = None, **kw: object) -> Env:
        policy = FakePolicy()
        env = Env(policy, tokens or FakeTokens(), str(tmp_path / f"audit{len(envs)}.jsonl"), **kw)
        ep = endpoint("127.0.0.1", env.upstream.port)
        policy.endpoints.append(ep)
        if bind:
            policy.bindings.append(binding(ep))
        envs.append(env)
        return env

    yield make
    for env in envs:
        env.close()
    for log in tmp_path.glob("audit*.jsonl"):
        text = log.read_text()
        assert SECRET not in text
        assert "Bearer" not in text
