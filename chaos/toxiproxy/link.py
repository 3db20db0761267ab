"""Links: one direction of one proxied connection, source socket -> toxic stages -> destination.

Mirrors upstream's link.go: a link is built from the proxy's toxic chain for its direction when
the connection is accepted, and toxics added, updated or removed later are spliced into every
live link of that direction.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from chaos.toxiproxy.stream import Chan, Chunk, Stage

if TYPE_CHECKING:
    from chaos.toxiproxy.toxics import ToxicWrapper

READ_SIZE = 32 * 1024  # upstream copies with io.Copy's 32 KiB buffer


def set_linger_zero(writer: asyncio.StreamWriter) -> None:
    """Make close() send RST instead of FIN, as upstream does for links built while a
    reset_peer toxic is on their direction."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class Link:
    def __init__(
        self,
        chain: list[ToxicWrapper | None],
        direction: int,
        source: asyncio.StreamReader,
        source_writer: asyncio.StreamWriter,
        dest: asyncio.StreamWriter,
        on_done: Callable[[Link], None],
    ) -> None:
        self.direction = direction
        self.source = source
        self.source_writer = source_writer
        self.dest = dest
        self._on_done = on_done
        chans = [Chan(1)] + [Chan(w.buffer_size if w else 1) for w in chain[1:]] + [Chan(1)]
        self.stages = [
            Stage(chans[i], chans[i + 1], w, w.toxic.new_state() if w else None)
            for i, w in enumerate(chain)
        ]
        self.input = chans[0]
        self.output = chans[-1]
        self.dead = False
        self._resets = any(w is not None and w.toxic.resets for w in chain)
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if self._resets:
            set_linger_zero(self.source_writer)
            set_linger_zero(self.dest)
        for stage in self.stages:
            stage.start()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read()), loop.create_task(self._write())]

    def kill(self) -> None:
        """Stop every task of this link; interrupts on its stages then report False."""
        if self.dead:
            return
        self.dead = True
        current = asyncio.current_task()
        for stage in self.stages:
            stage.closed = True
            if stage.task is not None and stage.task is not current:
                stage.task.cancel()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        self._on_done(self)

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                data = await self.source.read(READ_SIZE)
                if not data:
                    break
                await self.input.put(Chunk(data, loop.time()))
        except (ConnectionError, OSError):
            pass
        self.input.close()

    async def _write(self) -> None:
        try:
            while True:
                chunk = await self.output.get()
                if chunk is None:
                    break
                self.dest.write(chunk.data)
                await self.dest.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            # Upstream closes the whole destination socket when its chain ends; the other
            # direction then reads end-of-stream from it and winds down in turn.
            self.dest.close()
            self.kill()

    async def add_toxic(self, wrapper: ToxicWrapper) -> None:
        last = self.stages[-1]
        stage = Stage(Chan(wrapper.buffer_size), last.out, wrapper, wrapper.toxic.new_state())
        self.stages.append(stage)  # keep stages parallel to the chain even if the link ends
        if await last.interrupt():
            last.out = stage.inq
            stage.start()
            last.start()
        else:
            stage.closed = True

    async def update_toxic(self, wrapper: ToxicWrapper) -> None:
        stage = self.stages[wrapper.index]
        if await stage.interrupt():
            stage.wrapper = wrapper
            stage.start()

    async def remove_toxic(self, wrapper: ToxicWrapper, index: int) -> None:
        stage = self.stages[index]
        if not await stage.interrupt():
            del self.stages[index]
            return
        if wrapper.toxic.closes_on_removal:
            stage.close()
            del self.stages[index]
            return
        prev = self.stages[index - 1]
        del self.stages[index]
        if not await prev.interrupt():
            # The stage before has ended its stream: let the removed one drain as a noop so
            # the end of stream still reaches the destination.
            if not self.dead:
                stage.wrapper = None
                stage.start()
                assert stage.task is not None
                self._tasks.append(stage.task)  # no longer in self.stages; kill() stops it
            return
        # Oldest first: what the removed stage held, what was queued for it, then what the
        # stage before had not yet handed over.
        pending = [*stage.carry, *stage.inq.take_all()]
        prev.carry.extendleft(reversed(pending))
        prev.out = stage.out
        prev.start()
