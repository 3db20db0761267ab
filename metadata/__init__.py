"""The metadata state machine: brokers, topics, placement and assignments, replicated by the metadata Raft group."""
