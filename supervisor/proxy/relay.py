"""The two-way byte relay of raw tunnels and switched (WebSocket) connections.

Bytes already read on either side go first; a direction whose source ended is half-closed
onward (over TLS: close_notify) while the other keeps flowing. The relay ends when both
directions have, when nothing moved for ``idle`` seconds, when a side stopped reading for
its send timeout, or when the agent's message filter refuses a WebSocket message: both
sides then get a close frame. Without a filter, a direction between two plain sockets is
spliced (``supervisor.proxy.splice``): its bytes never enter Python.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from supervisor.proxy.channel import Channel, Conn
from supervisor.proxy.splice import SpliceGate, relay_to_eof
from supervisor.proxy.websocket import close_frame
from supervisor.proxy.ws_creds import WsRefused, upstream_close
from supervisor.proxy.ws_policy import FrameFilter

READ = 1 << 18


class Relay:
    __slots__ = ("_agent", "_gate", "_last", "_loop", "_messages", "_up", "refused", "stalled")

    def __init__(
        self,
        agent: Conn,
        up: Conn,
        messages: FrameFilter | None = None,
        gate: SpliceGate | None = None,
    ) -> None:
        self._agent, self._up, self._messages, self._gate = agent, up, messages, gate
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self.stalled = False  # a side read none of our bytes for its send timeout
        self.refused: WsRefused | None = None  # the filter refused an agent's message

    async def run(self, idle: float) -> bool:
        """Relay until done; True when it ended for idleness or a stalled side."""
        tasks = {
            asyncio.create_task(self._pump(self._agent, self._up.ch, self._messages)),
            asyncio.create_task(self._pump(self._up, self._agent.ch, None)),
        }
        try:
            while tasks and self.refused is None:
                _done, tasks = await asyncio.wait(
                    tasks, timeout=idle / 4, return_when=asyncio.FIRST_COMPLETED
                )
                if self.stalled or (tasks and self._loop.time() - self._last > idle):
                    return True
            return False
        finally:
            for t in tasks:
                t.cancel()

    async def _pump(self, src: Conn, dst: Channel, parse: FrameFilter | None) -> None:
        try:
            if src.buf:
                data = bytes(src.buf)
                src.buf.clear()
                dst.write(parse.feed(data) if parse is not None else data)
            spliced = False
            if parse is None and self._gate is not None:
                await dst.drain()
                spliced = await relay_to_eof(src, dst, self._gate, self._touch)
            if not spliced:
                await self._copy(src, dst, parse)
        except TimeoutError:
            self.stalled = True
        except WsRefused as exc:
            await self._refuse(exc, dst)
            return
        except (ConnectionError, OSError, ssl.SSLError):
            pass
        with contextlib.suppress(OSError, RuntimeError, ssl.SSLError):
            dst.write_eof()

    async def _copy(self, src: Conn, dst: Channel, parse: FrameFilter | None) -> None:
        while True:
            await dst.drain()
            data = await src.ch.read(READ)
            if not data:
                return
            self._last = self._loop.time()
            dst.write(parse.feed(data) if parse is not None else data)

    def _touch(self) -> None:
        self._last = self._loop.time()

    async def _refuse(self, exc: WsRefused, upstream: Channel) -> None:
        self.refused = exc
        upstream.write(upstream_close(exc.close_code))
        agent = self._agent.ch
        agent.write(close_frame(exc.close_code, "policy violation"))
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            await agent.drain()
