"""predictor_service: gRPC predictions from the newest published model, swapped in without downtime."""
