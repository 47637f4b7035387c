"""Local stand-ins for development and tests: the Kafka broker, the telemetry generator."""
