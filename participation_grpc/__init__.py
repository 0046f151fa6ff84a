"""participation-grpc: the gRPC service that decides who takes part in an activity."""
