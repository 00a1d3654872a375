#!/bin/sh
# Regenerate the vendored tfplugin6 modules. Needs grpcio-tools (pin it to the grpcio in
# ../pyproject.toml) in the python given as $PYTHON: the output's runtime check wants a
# protobuf at least as new as the one grpcio-tools bundles.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out="$here/src/terraform_provider_meshplane/_proto"
"${PYTHON:-python3}" -m grpc_tools.protoc -I "$here/proto" \
    --python_out="$out" --grpc_python_out="$out" "$here/proto/tfplugin6.proto"
# grpc_tools writes an absolute import; the modules live inside our package.
sed -i 's/^import tfplugin6_pb2 as/from . import tfplugin6_pb2 as/' "$out/tfplugin6_pb2_grpc.py"
