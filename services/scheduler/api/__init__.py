"""The scheduler's gRPC surface: messages.py converts between protobuf and the
domain's records, errors.py maps domain exceptions to status codes, servicer.py
is the thin SchedulerService."""
