"""squarenet: train a network to predict x² over REST, serve it over gRPC.

This package holds what the trainer, the predictor and clients share: the model-store
layout and the generated protobuf code. It imports no TensorFlow, Flask or grpc server.
"""

__version__ = "0.1.0"
