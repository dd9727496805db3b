"""The HTTP/JSON gateway in front of the gRPC services."""
