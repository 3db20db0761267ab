#!/usr/bin/env bash
# Regenerates wire/ from proto/replog.proto. The generated files are committed (so installing
# replog needs no protoc); tests/client/test_wire_generated.py fails when they are stale.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -Iproto --python_out=wire --pyi_out=wire \
  --grpc_python_out=wire proto/replog.proto
# grpc_tools emits `import replog_pb2`; make it a package-relative import.
sed -i 's/^import replog_pb2 as replog__pb2/from wire import replog_pb2 as replog__pb2/' \
  wire/replog_pb2_grpc.py
