#!/usr/bin/env bash
# The one codegen command: regenerates proto/isthmus/v1/*_pb2*.py from the .proto files.
# Usage: scripts/codegen.sh [OUT_DIR]   (OUT_DIR defaults to proto/, the committed location)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/proto}
py=${PYTHON:-$here/.venv/bin/python}
mkdir -p "$out"
"$py" -m grpc_tools.protoc -I "$here/proto" \
    --python_out="$out" --pyi_out="$out" --grpc_python_out="$out" \
    "$here"/proto/isthmus/v1/*.proto
