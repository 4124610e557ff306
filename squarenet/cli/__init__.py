"""The ``squarenet`` command-line client: trains over REST, predicts and watches over gRPC.

Only base dependencies are used here (httpx, grpcio client stubs, rich), so the client
installs without TensorFlow, Flask or the predictor's runtime.
"""
