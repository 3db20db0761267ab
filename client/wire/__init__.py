"""Generated protobuf / gRPC code for proto/replog.proto (regenerate with proto/generate.sh)."""
