"""Generated protobuf and gRPC code for `squarenet.v1` (see `make proto`); never edited by hand."""
