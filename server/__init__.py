"""The broker process: gRPC services, the runtime that drives every Raft group, transport, config, CLI."""
