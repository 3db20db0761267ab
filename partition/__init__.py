"""The partition state machine: committed Raft entries are the record log (offsets, fetch, retention, idempotent producers)."""
