"""The offset-commit timer of the stream: a firing with nothing pending commits nothing (it
raised IndexError when the stream group's offsets had been moved under a running job)."""

from apache_beam.utils.timestamp import Timestamp

from betlake.core.config import Settings
from streaming.sinks import CommitOffsetsFn


class Bag(list):
    def read(self):
        return list(self)

    def add(self, value) -> None:
        self.append(value)


class Timer:
    def __init__(self) -> None:
        self.at = None

    def set(self, at) -> None:
        self.at = at


def test_a_firing_with_nothing_pending_commits_nothing() -> None:
    commits = CommitOffsetsFn(Settings())
    commits.consumer = None  # any commit would fail on it
    pending, expiry = Bag(), Timer()
    commits.commit_expired(partition=0, fired=Timestamp(micros=10**15), pending=pending,
                           expiry=expiry)  # fmt: skip
    assert pending == [] and expiry.at is None
