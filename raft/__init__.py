"""Sans-IO Raft: a pure state machine per group, plus durable log storage (raft.storage)."""
