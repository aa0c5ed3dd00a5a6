"""Generated protobuf and gRPC code for the sluice.v1 wire contract (see the .proto files here)."""
