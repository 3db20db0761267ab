"""A proxy's toxics: one chain per direction, spliced into every live link
(upstream's toxic_collection.go)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from chaos.toxiproxy import errors
from chaos.toxiproxy.link import Link
from chaos.toxiproxy.stream import parse_direction
from chaos.toxiproxy.toxics import REGISTRY, ToxicWrapper


def decode_json(body: bytes) -> Any:
    """Decode the first JSON value of a body like Go's json.Decoder (trailing data ignored)."""
    try:
        text = body.decode("utf-8").lstrip()
        if not text:
            raise errors.BAD_REQUEST_BODY.joined("EOF")
        value, _ = json.JSONDecoder().raw_decode(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.BAD_REQUEST_BODY.joined(str(exc)) from None
    return value


def get_field(obj: dict[str, Any], key: str, kinds: tuple[type, ...], default: Any) -> Any:
    """A field of a decoded object the way Go fills a struct: exact key first, then any
    case, null keeps the default, a wrong type is a bad request."""
    value = obj.get(key, _MISSING)
    if value is _MISSING:
        value = next((v for k, v in obj.items() if k.lower() == key.lower()), _MISSING)
    if value is _MISSING or value is None:
        return default
    if isinstance(value, bool) and bool not in kinds:
        value = _MISSING
    if value is _MISSING or not isinstance(value, kinds):
        raise errors.BAD_REQUEST_BODY.joined(f"json: cannot unmarshal {value!r} into {key}")
    return value


_MISSING = object()


class ToxicCollection:
    def __init__(self) -> None:
        # Index 0 of each chain is the hidden noop that upstream keeps so the first real
        # toxic always has a stage before it to rewire.
        self.chain: list[list[ToxicWrapper | None]] = [[None], [None]]
        self.links: set[Link] = set()
        self.lock = asyncio.Lock()

    def toxics(self) -> list[ToxicWrapper]:
        return [w for chain in self.chain for w in chain[1:] if w is not None]

    def find(self, name: str) -> ToxicWrapper | None:
        return next((w for w in self.toxics() if w.name == name), None)

    def get(self, name: str) -> ToxicWrapper:
        wrapper = self.find(name)
        if wrapper is None:
            raise errors.TOXIC_NOT_FOUND
        return wrapper

    def _links(self, direction: int) -> list[Link]:
        return [link for link in self.links if link.direction == direction and not link.dead]

    async def add_json(self, body: bytes) -> ToxicWrapper:
        async with self.lock:
            obj = decode_json(body)
            if obj is None:
                obj = {}
            if not isinstance(obj, dict):
                raise errors.BAD_REQUEST_BODY.joined("json: cannot unmarshal into a toxic")
            name = get_field(obj, "name", (str,), "")
            toxic_type = get_field(obj, "type", (str,), "")
            stream = get_field(obj, "stream", (str,), "downstream")
            toxicity = float(get_field(obj, "toxicity", (int, float), 1.0))
            try:
                direction = parse_direction(stream)
            except ValueError:
                raise errors.INVALID_STREAM from None
            if not name:
                name = f"{toxic_type}_{stream}"
            cls = REGISTRY.get(toxic_type)
            if cls is None:
                raise errors.INVALID_TOXIC_TYPE
            if self.find(name) is not None:
                raise errors.TOXIC_ALREADY_EXISTS
            toxic = cls()
            try:
                toxic.set_attributes(get_field(obj, "attributes", (dict,), None))
            except ValueError as exc:
                raise errors.BAD_REQUEST_BODY.joined(str(exc)) from None
            wrapper = ToxicWrapper(name, toxic_type, stream, toxicity, direction, toxic)
            chain = self.chain[direction]
            wrapper.index = len(chain)
            chain.append(wrapper)
            links = self._links(direction)
            await asyncio.gather(*(link.add_toxic(wrapper) for link in links))
            return wrapper

    async def update_json(self, name: str, body: bytes) -> ToxicWrapper:
        async with self.lock:
            wrapper = self.get(name)
            obj = decode_json(body)
            if obj is None:
                obj = {}
            if not isinstance(obj, dict):
                raise errors.BAD_REQUEST_BODY.joined("json: cannot unmarshal into a toxic")
            toxicity = float(get_field(obj, "toxicity", (int, float), wrapper.toxicity))
            try:
                wrapper.toxic.set_attributes(get_field(obj, "attributes", (dict,), None))
            except ValueError as exc:
                raise errors.BAD_REQUEST_BODY.joined(str(exc)) from None
            wrapper.toxicity = toxicity
            links = self._links(wrapper.direction)
            await asyncio.gather(*(link.update_toxic(wrapper) for link in links))
            return wrapper

    async def remove(self, name: str) -> None:
        async with self.lock:
            await self._remove(self.get(name))

    async def reset(self) -> None:
        async with self.lock:
            for chain in self.chain:
                while len(chain) > 1:
                    wrapper = chain[1]
                    assert wrapper is not None
                    await self._remove(wrapper)

    async def _remove(self, wrapper: ToxicWrapper) -> None:
        chain = self.chain[wrapper.direction]
        index = wrapper.index
        del chain[index]
        for i in range(index, len(chain)):
            moved = chain[i]
            assert moved is not None
            moved.index = i
        links = self._links(wrapper.direction)
        await asyncio.gather(*(link.remove_toxic(wrapper, index) for link in links))
        wrapper.index = -1

    def open_link(
        self,
        direction: int,
        source: asyncio.StreamReader,
        source_writer: asyncio.StreamWriter,
        dest: asyncio.StreamWriter,
        on_done: Callable[[Link], None],
    ) -> Link:
        def done(link: Link) -> None:
            self.links.discard(link)
            on_done(link)

        link = Link(list(self.chain[direction]), direction, source, source_writer, dest, done)
        self.links.add(link)
        link.start()
        return link
