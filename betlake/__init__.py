"""betlake: an open lakehouse for betting telemetry."""
