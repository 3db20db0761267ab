"""The partition state machine: committed Raft entries are the record log (offsets, fetch, retention, idempotent producers).

Pure and deterministic: imports only ``raft.types`` and ``wire.batch`` of ours; no I/O, no
asyncio, no clock. See partition/state.py for the model and the runtime's calling contract.
"""

from partition.config import (
    MAX_MESSAGE_BYTES_LIMIT,
    TOPIC_CONFIG_KEYS,
    PartitionConfig,
    topic_config,
)
from partition.errors import (
    BatchTooLarge,
    ConfigError,
    InvalidBatch,
    OffsetOutOfRange,
    OutOfOrderSequence,
    PartitionError,
    PartitionInvariantError,
    ProducerFenced,
    UnsupportedCompression,
)
from partition.header import EntryKind, encode_log_start, log_start_of
from partition.producers import BatchMetadata, ProducerEntry
from partition.retention import physical_cut, retention_cut
from partition.state import (
    Admission,
    AlreadyApplied,
    Append,
    Appended,
    ApplyResult,
    Control,
    Duplicate,
    DuplicateOf,
    FetchResult,
    LogStartMoved,
    PartitionState,
    Rejected,
)

__all__ = [
    "MAX_MESSAGE_BYTES_LIMIT",
    "TOPIC_CONFIG_KEYS",
    "Admission",
    "AlreadyApplied",
    "Append",
    "Appended",
    "ApplyResult",
    "BatchMetadata",
    "BatchTooLarge",
    "ConfigError",
    "Control",
    "Duplicate",
    "DuplicateOf",
    "EntryKind",
    "FetchResult",
    "InvalidBatch",
    "LogStartMoved",
    "OffsetOutOfRange",
    "OutOfOrderSequence",
    "PartitionConfig",
    "PartitionError",
    "PartitionInvariantError",
    "PartitionState",
    "ProducerEntry",
    "ProducerFenced",
    "Rejected",
    "UnsupportedCompression",
    "encode_log_start",
    "log_start_of",
    "physical_cut",
    "retention_cut",
    "topic_config",
]
