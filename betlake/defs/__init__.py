"""Dagster definitions, one module per domain: reference data, gold figures, lake upkeep."""
