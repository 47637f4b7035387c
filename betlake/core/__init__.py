"""The core floor: the contract, settings, windowing, lake IO, reference data, Kafka and
BigQuery clients. Imports neither the pipeline nor Dagster."""
