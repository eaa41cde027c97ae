"""The proxy on uvloop: the same scenarios as on asyncio's loop (skipped without uvloop)."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable
from typing import Any

import pytest

from supervisor.proxy.loop import loop_name, new_event_loop
from tests.proxy import test_deadline, test_floods, test_server, test_tunnels


def test_falls_back_to_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import fails
    loop = new_event_loop()
    try:
        assert loop_name(loop) == "asyncio" and isinstance(loop, asyncio.BaseEventLoop)
    finally:
        loop.close()


SCENARIOS: list[Callable[[Any], None]] = [
    test_server.test_agent_credential_replaced_by_exactly_one_injected_header,
    test_server.test_grant_failure_is_502_and_nothing_reaches_upstream,
    test_server.test_keep_alive_and_pipelining_reuse_connections,
    test_server.test_head_204_304_and_chunked_framing,
    test_server.test_upstream_down_is_502,
    test_server.test_close_is_graceful,
    test_tunnels.test_raw_tunnel_for_endpoint_without_inspection,
    test_tunnels.test_plain_http_inside_connect_is_inspected,
    test_floods.test_slowloris_is_cut_by_the_head_timeout_others_unaffected,
    test_floods.test_agent_connection_cap_answers_503_and_recovers,
    test_floods.test_destination_cap_queues_then_503,
    test_floods.test_tunnel_holds_a_destination_slot,
    test_floods.test_upload_stops_when_the_upstream_goes_away,
    test_deadline.test_idle_keep_alive_connection_is_closed,
    test_deadline.test_silent_upstream_is_502_after_the_response_timeout,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_scenario_on_uvloop(scenario: Callable[[Any], None], make_env: Any) -> None:
    uvloop = pytest.importorskip("uvloop")
    loop = new_event_loop()
    assert loop_name(loop) == "uvloop"
    loop.close()
    scenario(functools.partial(make_env, loop_factory=uvloop.new_event_loop))
