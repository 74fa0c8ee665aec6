#!/usr/bin/env bash
# Regenerates the code for scorer.proto: the messages into bench/Sources/ScorerMessages (used by the harness,
# which needs only SwiftProtobuf) and the service into bench/Sources/grpc-peer. The output is committed, so builds need neither
# protoc nor the plugins (building them takes ~3 minutes): run this only after editing scorer.proto.
#
#   apt-get install protobuf-compiler      (or: pip install grpcio-tools, whose protoc this script uses if there is no protoc)
#   git clone --branch 1.39.0 https://github.com/apple/swift-protobuf && (cd swift-protobuf && swift build -c release --product protoc-gen-swift)
#   git clone --branch 2.4.1 https://github.com/grpc/grpc-swift-protobuf && (cd grpc-swift-protobuf && swift build -c release --product protoc-gen-grpc-swift-2)
#   PROTOC_GEN_SWIFT=.../protoc-gen-swift PROTOC_GEN_GRPC_SWIFT=.../protoc-gen-grpc-swift-2 bench/proto/generate.sh
#
# Without PROTOC_GEN_GRPC_SWIFT only the messages are regenerated: enough when the edit left the service alone.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
messages="$here/../Sources/ScorerMessages"
service="$here/../Sources/grpc-peer"
: "${PROTOC_GEN_SWIFT:?set PROTOC_GEN_SWIFT to the protoc-gen-swift binary}"
run_protoc() {
  if command -v protoc >/dev/null; then protoc "$@"; else python3 -m grpc_tools.protoc "$@"; fi
}
mkdir -p "$messages" "$service"
run_protoc --proto_path="$here" \
  --plugin=protoc-gen-swift="$PROTOC_GEN_SWIFT" --swift_out="$messages" --swift_opt=Visibility=Public \
  scorer.proto
if [ -z "${PROTOC_GEN_GRPC_SWIFT:-}" ]; then
  echo "generated $messages/scorer.pb.swift; PROTOC_GEN_GRPC_SWIFT is unset, so the service code was left as it was"
  exit 0
fi
run_protoc --proto_path="$here" \
  --plugin=protoc-gen-grpc-swift-2="$PROTOC_GEN_GRPC_SWIFT" --grpc-swift-2_out="$service" \
  --grpc-swift-2_opt=Visibility=Internal,Client=false,Server=true,ExtraModuleImports=ScorerMessages \
  scorer.proto
echo "generated $messages/scorer.pb.swift and $service/scorer.grpc.swift"
