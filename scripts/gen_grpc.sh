#!/usr/bin/env bash
# Regenerate the agent's gRPC modules from src/edgeml/agent/grpc/grpc_predict_v2.proto.
#
# The generated code registers its messages in a descriptor pool of its own instead of
# protobuf's default pool: tritonclient, KServe and MLServer register the same "inference.*"
# names in the default pool, and two registrations of one name fail at import
# (triton-inference-server/client#730, kserve/kserve#3099). The wire format does not depend
# on the pool, so a client of any of them talks to the agent as to any OIP v2 server.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
out=src/edgeml/agent/grpc
"$PYTHON" -m grpc_tools.protoc -I src --python_out=src --pyi_out=src --grpc_python_out=src \
  edgeml/agent/grpc/grpc_predict_v2.proto
sed -i 's/_descriptor_pool\.Default()/_descriptor_pool.DescriptorPool()/' "$out/grpc_predict_v2_pb2.py"
grep -q '_descriptor_pool.DescriptorPool()' "$out/grpc_predict_v2_pb2.py"
