"""The toxics: what each does to one direction of a connection, following upstream's
``toxics/*.go`` (times in milliseconds except slicer's ``delay`` in microseconds; bandwidth
``rate`` in KB/s)."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, ClassVar

from chaos.toxiproxy.stream import Chunk, Stage, noop_pipe


class Toxic:
    type_name: ClassVar[str]
    fields: ClassVar[tuple[str, ...]] = ()
    buffer_size: ClassVar[int] = 1  # capacity of the channel feeding this toxic
    closes_on_removal: ClassVar[bool] = False  # upstream's CleanupToxic
    resets: ClassVar[bool] = False  # links created while present close with RST

    def __init__(self) -> None:
        for name in self.fields:
            setattr(self, name, 0)

    def set_attributes(self, attrs: Any) -> None:
        """Merge JSON attributes like Go's decoder: unknown keys ignored, keys matched
        case-insensitively, integers only."""
        if attrs is None:
            return
        if not isinstance(attrs, dict):
            raise ValueError("json: cannot unmarshal attributes into an object")
        by_lower = {name.lower(): name for name in self.fields}
        updates = {}
        for key, value in attrs.items():
            name = key if key in self.fields else by_lower.get(str(key).lower())
            if name is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"json: cannot unmarshal {value!r} into field {name} of type int")
            updates[name] = value
        for name, value in updates.items():
            setattr(self, name, value)

    def attributes(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.fields}

    def new_state(self) -> Any:
        return None

    async def pipe(self, stage: Stage) -> None:
        await noop_pipe(stage)


class NoopToxic(Toxic):
    type_name = "noop"


class LatencyToxic(Toxic):
    type_name = "latency"
    fields = ("latency", "jitter")
    buffer_size = 1024  # upstream buffers so delayed chunks don't stall the reader
    latency: int
    jitter: int

    def _delay(self) -> float:
        delay = self.latency
        if self.jitter > 0:
            delay += random.randrange(-self.jitter, self.jitter)
        return delay / 1000.0

    async def pipe(self, stage: Stage) -> None:
        loop = asyncio.get_running_loop()
        while True:
            chunk = await stage.inq.get()
            if chunk is None:
                stage.close()
                return
            # Measured from when the bytes were read, so queueing behind earlier chunks
            # does not add to the delay.
            sleep = self._delay() - (loop.time() - chunk.ts)
            try:
                await asyncio.sleep(max(sleep, 0.0))
            except asyncio.CancelledError:
                stage.carry.append(chunk)
                raise
            chunk.ts += sleep
            await stage.send(chunk)


class BandwidthToxic(Toxic):
    type_name = "bandwidth"
    fields = ("rate",)
    rate: int

    async def pipe(self, stage: Stage) -> None:
        loop = asyncio.get_running_loop()
        owed = 0.0  # seconds of transmission time not yet slept; may go negative (credit)
        while True:
            chunk = await stage.inq.get()
            if chunk is None:
                stage.close()
                return
            data = chunk.data
            try:
                if self.rate <= 0:
                    # Upstream spins sending empty slices forever: nothing passes until the
                    # toxic is changed or removed.
                    await loop.create_future()
                owed += len(data) / self.rate / 1000.0
                step = self.rate * 100  # bytes per 100 ms
                while len(data) > step:
                    await asyncio.sleep(0.1)
                    await stage.out.put(Chunk(data[:step], chunk.ts))
                    data = data[step:]
                    owed -= 0.1
                start = loop.time()
                await asyncio.sleep(max(owed, 0.0))
                owed -= loop.time() - start
                await stage.out.put(Chunk(data, chunk.ts))
            except asyncio.CancelledError:
                stage.carry.append(Chunk(data, chunk.ts))
                raise


class TimeoutToxic(Toxic):
    type_name = "timeout"
    fields = ("timeout",)
    closes_on_removal = True  # upstream's Cleanup closes the stub: connections end
    timeout: int

    async def pipe(self, stage: Stage) -> None:
        timeout = self.timeout / 1000.0
        while True:
            # A fresh timer per received chunk, as upstream's select on time.After.
            try:
                chunk = await stage.inq.get(timeout if timeout > 0 else None)
            except TimeoutError:
                stage.close()
                return
            if chunk is None:
                stage.close()
                return
            # The data is dropped.


class ResetPeerToxic(Toxic):
    type_name = "reset_peer"
    fields = ("timeout",)
    resets = True
    timeout: int

    async def pipe(self, stage: Stage) -> None:
        await stage.inq.get()  # the first chunk (dropped) or end of stream arms it
        try:
            await asyncio.sleep(self.timeout / 1000.0)
        except asyncio.CancelledError:
            # Upstream's wait cannot be interrupted and the reset still happens; reset now.
            stage.close()
            raise
        stage.close()


@dataclass
class _Sent:
    count: int = 0


class LimitDataToxic(Toxic):
    type_name = "limit_data"
    fields = ("bytes",)
    bytes: int

    def new_state(self) -> _Sent:
        return _Sent()

    async def pipe(self, stage: Stage) -> None:
        sent: _Sent = stage.state
        while True:
            chunk = await stage.inq.get()
            if chunk is None:
                stage.close()
                return
            remaining = max(self.bytes - sent.count, 0)
            if remaining < len(chunk.data):
                chunk = Chunk(chunk.data[:remaining], chunk.ts)
            if chunk.data:
                await stage.send(chunk)
                sent.count += len(chunk.data)
            if self.bytes - sent.count <= 0:
                stage.close()
                return


class SlicerToxic(Toxic):
    type_name = "slicer"
    fields = ("average_size", "size_variation", "delay")
    average_size: int
    size_variation: int
    delay: int

    def _bounds(self, start: int, end: int, out: list[int]) -> None:
        # Upstream halves recursively (with a random shift) until a piece is within
        # size_variation of average_size; the guards stop the cases where upstream would
        # recurse forever or slice backwards.
        if (end - start) - self.average_size <= self.size_variation or end - start <= 1:
            out.append(end)
            return
        mid = start + (end - start) // 2
        if self.size_variation > 0:
            mid += random.randrange(-self.size_variation, self.size_variation)
        mid = min(max(mid, start + 1), end - 1)
        self._bounds(start, mid, out)
        self._bounds(mid, end, out)

    async def pipe(self, stage: Stage) -> None:
        while True:
            chunk = await stage.inq.get()
            if chunk is None:
                stage.close()
                return
            ends: list[int] = []
            self._bounds(0, len(chunk.data), ends)
            done = 0
            try:
                for end in ends:
                    await stage.out.put(Chunk(chunk.data[done:end], chunk.ts))
                    done = end
                    await asyncio.sleep(self.delay / 1_000_000)
            except asyncio.CancelledError:
                if done < len(chunk.data):
                    stage.carry.append(Chunk(chunk.data[done:], chunk.ts))
                raise


class SlowCloseToxic(Toxic):
    type_name = "slow_close"
    fields = ("delay",)
    delay: int

    async def pipe(self, stage: Stage) -> None:
        while True:
            chunk = await stage.inq.get()
            if chunk is None:
                await asyncio.sleep(self.delay / 1000.0)
                stage.close()
                return
            await stage.send(chunk)


REGISTRY: dict[str, type[Toxic]] = {
    cls.type_name: cls
    for cls in (
        NoopToxic,
        LatencyToxic,
        BandwidthToxic,
        TimeoutToxic,
        ResetPeerToxic,
        LimitDataToxic,
        SlicerToxic,
        SlowCloseToxic,
    )
}


@dataclass
class ToxicWrapper:
    """A named toxic on one direction of a proxy (upstream's ToxicWrapper)."""

    name: str
    type: str
    stream: str
    toxicity: float
    direction: int
    toxic: Toxic
    index: int = -1  # position in the proxy's chain for its direction (0 is the hidden noop)

    @property
    def buffer_size(self) -> int:
        return self.toxic.buffer_size

    def to_json(self) -> dict[str, Any]:
        # Key order as Go marshals the struct.
        return {
            "attributes": self.toxic.attributes(),
            "name": self.name,
            "type": self.type,
            "stream": self.stream,
            "toxicity": self.toxicity,
        }
