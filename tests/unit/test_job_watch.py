"""The stream waits for its job however the runner's state stream ends at its deadline
(``streaming.job.wait_until_finished``): a stream runs for as long as it is let."""

from __future__ import annotations

import grpc
import pytest
from apache_beam.runners.runner import PipelineState

from streaming.job import wait_until_finished


class StreamEnded(grpc.RpcError):
    """How gRPC ends a call: with a status code."""

    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


class RunningJob:
    """A job whose state stream ends with ``error``, and which runs on for two polls more."""

    def __init__(self, error: grpc.RpcError) -> None:
        self.error = error
        self.polls_left = 2

    def wait_until_finish(self) -> None:
        raise self.error

    @property
    def state(self) -> str:
        self.polls_left -= 1
        return PipelineState.RUNNING if self.polls_left > 0 else PipelineState.DONE


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.DEADLINE_EXCEEDED,  # gRPC's client ended the watch
        # Prism reset it (RST_STREAM, CANCEL) when the deadline reached its side first: the job
        # stopped itself, in 1 of about 24 runs of test_stream_outlives_the_job_services_timeout
        grpc.StatusCode.CANCELLED,
    ],
)
def test_the_job_is_waited_for_when_its_watch_ends_at_the_deadline(code: grpc.StatusCode) -> None:
    job = RunningJob(StreamEnded(code))
    wait_until_finished(job)
    assert job.polls_left == 0  # returned once the job was done, not before


def test_a_runner_gone_away_is_an_error() -> None:
    with pytest.raises(grpc.RpcError):
        wait_until_finished(RunningJob(StreamEnded(grpc.StatusCode.UNAVAILABLE)))
