"""Local runners' SDK workers end a bundle without waiting out Beam's step sampler."""

from __future__ import annotations

from apache_beam.runners.worker import statesampler
from apache_beam.utils.counters import CounterFactory

from betlake.core.config import Settings
from streaming.runners import STEP_SAMPLING_MS, pipeline_options


def test_a_local_pipelines_bundles_sample_their_steps_often_enough_to_end_at_once(
    settings: Settings,
) -> None:
    """A bundle ends once its sampling thread wakes (Beam's default: up to 200 ms later, added
    to every read of the stream); the options of a local run shorten that period."""
    pipeline_options(settings, streaming=True, job_endpoint="localhost:1")

    sampler = statesampler.StateSampler("step", CounterFactory())

    assert sampler.sampling_period_ms == STEP_SAMPLING_MS <= 20
