#!/usr/bin/env bash
# Regenerates the code for scorer.proto: the messages into bench/Sources/ScorerMessages (used by the harness,
# which needs only SwiftProtobuf) and the service into bench/Sources/grpc-peer. The output is committed, so builds need neither
# protoc nor the plugins (building them takes ~3 minutes): run this only after editing scorer.proto.
#
#   apt-get install protobuf-compiler
#   git clone --branch 1.39.0 https://github.com/apple/swift-protobuf && (cd swift-protobuf && swift build -c release --product protoc-gen-swift)
#   git clone --branch 2.4.1 https://github.com/grpc/grpc-swift-protobuf && (cd grpc-swift-protobuf && swift build -c release --product protoc-gen-grpc-swift-2)
#   PROTOC_GEN_SWIFT=.../protoc-gen-swift PROTOC_GEN_GRPC_SWIFT=.../protoc-gen-grpc-swift-2 bench/proto/generate.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
messages="$here/../Sources/ScorerMessages"
service="$here/../Sources/grpc-peer"
: "${PROTOC_GEN_SWIFT:?set PROTOC_GEN_SWIFT to the protoc-gen-swift binary}"
: "${PROTOC_GEN_GRPC_SWIFT:?set PROTOC_GEN_GRPC_SWIFT to the protoc-gen-grpc-swift-2 binary}"
mkdir -p "$messages" "$service"
protoc --proto_path="$here" \
  --plugin=protoc-gen-swift="$PROTOC_GEN_SWIFT" --swift_out="$messages" --swift_opt=Visibility=Public \
  scorer.proto
protoc --proto_path="$here" \
  --plugin=protoc-gen-grpc-swift-2="$PROTOC_GEN_GRPC_SWIFT" --grpc-swift-2_out="$service" \
  --grpc-swift-2_opt=Visibility=Internal,Client=false,Server=true,ExtraModuleImports=ScorerMessages \
  scorer.proto
echo "generated $messages/scorer.pb.swift and $service/scorer.grpc.swift"
