"""Broker liveness, judged by the metadata leader alone, with its own monotonic clock.

Contract: pure and in memory; no I/O, no asyncio, no clock of its own (``now_s`` is always
an argument: the leader's ``time.monotonic()``, never a wall clock, never another machine's).
Nothing here is replicated: the leader turns liveness *flips* into replicated
``SetBrokerFenced`` commands, and every replica's ``MetadataState.live_brokers()`` follows the
committed fenced flags.

Why (#12 defect 19): liveness used to be ``last_heartbeat_ms = max(old, cmd.now_ms)``, the
proposer's wall clock compared with the reader's. A broker whose clock ran ahead stayed
"alive" long after it died, and a proposer far ahead saw every broker as dead. Kafka KRaft
does what this module does: the active controller tracks each broker's last heartbeat on its
own monotonic clock, in memory, and fences a broker whose session expired by writing a
record to the metadata log.

The leader's loop:

* ``on_became_leader(now_s, registered, fenced)`` when this node becomes the metadata leader:
  every registered, unfenced broker gets one full session of grace from now (the new leader
  has not heard from anyone yet); fenced brokers stay fenced until they heartbeat.
* ``on_heartbeat(node_id, now_s)`` for every heartbeat (or registration) that reaches it.
* ``changes(now_s)`` every tick (or every heartbeat interval): the brokers whose liveness
  flipped since the last call, as ``(node_id, alive)``; propose ``SetBrokerFenced(node_id,
  fenced=not alive)`` for each. A proposal that is dropped is simply reported again: call
  ``retry(node_id)`` and the next ``changes`` repeats it.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["BrokerLiveness"]


class BrokerLiveness:
    __slots__ = ("_last_s", "_reported", "_session_timeout_s")

    def __init__(self, session_timeout_s: float) -> None:
        if session_timeout_s <= 0:
            raise ValueError(f"session_timeout_s must be > 0, got {session_timeout_s}")
        self._session_timeout_s = session_timeout_s
        self._last_s: dict[int, float] = {}
        """node id -> leader's monotonic time of its last heartbeat (or of the grace start)."""
        self._reported: dict[int, bool] = {}
        """node id -> the liveness last reported through ``changes`` (or known at election)."""

    @property
    def session_timeout_s(self) -> float:
        return self._session_timeout_s

    def on_became_leader(
        self, now_s: float, known_brokers: Iterable[int], fenced: Iterable[int] = ()
    ) -> None:
        """Start judging: registered brokers not in ``fenced`` are alive for one session
        timeout from ``now_s``; ``fenced`` ones are dead until they heartbeat."""
        fenced_set = frozenset(fenced)
        self._last_s = {n: now_s for n in known_brokers if n not in fenced_set}
        self._reported = {n: n not in fenced_set for n in known_brokers}
        for n in fenced_set:
            self._reported[n] = False

    def on_heartbeat(self, node_id: int, now_s: float) -> None:
        """A heartbeat from ``node_id`` reached the leader at its monotonic time ``now_s``."""
        if now_s > self._last_s.get(node_id, float("-inf")):
            self._last_s[node_id] = now_s

    def forget(self, node_id: int) -> None:
        """The broker is no longer registered."""
        self._last_s.pop(node_id, None)
        self._reported.pop(node_id, None)

    def is_alive(self, node_id: int, now_s: float) -> bool:
        last = self._last_s.get(node_id)
        return last is not None and now_s - last <= self._session_timeout_s

    def live(self, now_s: float) -> frozenset[int]:
        """Brokers heard from within the session timeout (grace included)."""
        limit = self._session_timeout_s
        return frozenset(n for n, last in self._last_s.items() if now_s - last <= limit)

    def changes(self, now_s: float) -> list[tuple[int, bool]]:
        """``(node_id, alive)`` for every broker whose liveness differs from what was last
        reported, sorted by node id; each flip is reported once."""
        live = self.live(now_s)
        out: list[tuple[int, bool]] = []
        for node_id in sorted(self._reported.keys() | self._last_s.keys()):
            alive = node_id in live
            if self._reported.get(node_id) != alive:
                self._reported[node_id] = alive
                out.append((node_id, alive))
        return out

    def sync_committed(self, alive: dict[int, bool]) -> None:
        """What the committed metadata says (registered broker -> not fenced) becomes what was
        "last reported", so :meth:`changes` reports every broker whose liveness differs from
        the committed flag. A new leader's view at election can be older than its log: a
        SetBrokerFenced of the previous leader committed afterwards fenced a broker this
        leader believed it had reported alive, and no flip was ever reported again, so the
        broker stayed fenced for good (system simulation, default seed 10043)."""
        for node_id, committed_alive in alive.items():
            self._reported[node_id] = committed_alive

    def retry(self, node_id: int) -> None:
        """The SetBrokerFenced for ``node_id`` was not committed: report it again next time."""
        self._reported.pop(node_id, None)
