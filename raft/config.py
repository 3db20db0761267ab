"""RaftConfig: the knobs of one Raft group member.

Contract: a frozen value, validated once in ``__post_init__`` (``ConfigError(field, value,
hint)``). The core reads it and never mutates it. Durations are in *ticks*: the runtime decides
how long a tick is (``tick()`` is the only clock the core sees).
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.errors import ConfigError


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: int
    """This node's id; positive (0 means "nobody")."""
    election_ticks: int = 5
    """Base election timeout. The effective timeout is drawn from
    [election_ticks, 2*election_ticks) after every role change (thesis §3.4): larger means
    slower failover, smaller means spurious elections on a slow network. 5 ticks of the
    broker's default 100 ms: a 0.5-1 s timeout, failover well inside 2 s."""
    heartbeat_ticks: int = 1
    """Leader heartbeat interval; must be smaller than election_ticks."""
    max_size_per_msg: int = 1 << 20
    """Bytes of entries per APP message (at least one entry is always sent)."""
    max_inflight_msgs: int = 256
    """APP messages in flight per follower in REPLICATE state (pipelining window)."""
    max_inflight_bytes: int = 32 << 20
    """Entry bytes in flight per follower; 0 disables the byte limit."""
    max_uncommitted_bytes: int = 64 << 20
    """Uncommitted entry payload a leader accepts before proposals are dropped."""
    pre_vote: bool = True
    """Run a PreVote round before bumping the term (thesis §9.6)."""
    check_quorum: bool = True
    """Leader steps down without a quorum's contact for an election timeout; followers ignore
    vote requests while they hear from a leader (thesis §6.2, §4.2.3)."""
    priority: int = 0
    """This node's own leadership priority, used when no priority map was set."""
    broadcast_commit: bool = True
    """When the leader's commit index moves, send every follower an append at once, empty if
    it has nothing new (etcd's behaviour), so followers apply without delay. False: a follower
    with nothing new learns the commit index from the next append or heartbeat (within
    ``heartbeat_ticks``), as Kafka followers learn the high watermark from their next fetch.
    Under a steady stream of writes that halves the messages per write (every write otherwise
    costs an empty append and its response per follower). Raft's safety never depends on when
    a follower learns the commit index, only how soon it applies does. A leader quiesces only
    after two quiet heartbeat rounds, and a follower that still lacks the final commit index
    (those heartbeats lost) does not go quiet: its election timeout wakes the group, whose
    next heartbeat carries it (server/runtime.py)."""

    def __post_init__(self) -> None:
        if self.node_id <= 0:
            raise ConfigError("node_id", self.node_id, "node ids are positive; 0 means nobody")
        if self.heartbeat_ticks <= 0:
            raise ConfigError("heartbeat_ticks", self.heartbeat_ticks, "must be >= 1")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ConfigError(
                "election_ticks",
                self.election_ticks,
                f"must be greater than heartbeat_ticks ({self.heartbeat_ticks})",
            )
        if self.max_size_per_msg <= 0:
            raise ConfigError("max_size_per_msg", self.max_size_per_msg, "must be > 0")
        if self.max_inflight_msgs <= 0:
            raise ConfigError("max_inflight_msgs", self.max_inflight_msgs, "must be >= 1")
        if self.max_inflight_bytes < 0:
            raise ConfigError("max_inflight_bytes", self.max_inflight_bytes, "0 (off) or more")
        if self.max_uncommitted_bytes <= 0:
            raise ConfigError("max_uncommitted_bytes", self.max_uncommitted_bytes, "must be > 0")
