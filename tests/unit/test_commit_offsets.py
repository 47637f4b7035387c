"""The offset commits of the stream: a firing with nothing pending commits nothing (it raised
IndexError when the stream group's offsets had been moved under a running job), and a read
does not read back the reads pending before it."""

from apache_beam.utils.timestamp import Timestamp

from betlake.core.config import Settings
from streaming.kafka_source import StoredOffsets
from streaming.sinks import CommitOffsetsFn


class Bag(list):
    def read(self):
        return list(self)

    def add(self, value) -> None:
        self.append(value)


class BlindBag(Bag):
    def read(self):
        raise AssertionError("the pending reads were read back")


class Value:
    def __init__(self) -> None:
        self.value = None

    def read(self):
        return self.value

    def write(self, value) -> None:
        self.value = value

    def clear(self) -> None:
        self.value = None


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
                           earliest=Value(), expiry=expiry)  # fmt: skip
    assert pending == [] and expiry.at is None


def test_reads_are_kept_without_reading_back_and_the_timer_is_at_the_earliest() -> None:
    commits = CommitOffsetsFn(Settings())
    pending, earliest, expiry = BlindBag(), Value(), Timer()
    closing = [3_000, 2_000, 5_000, 2_000, 1_000, 4_000]
    for first, open_until in enumerate(closing):
        read = StoredOffsets(first, first + 1, open_until, 0)
        commits.process((0, tuple(read)), pending=pending, earliest=earliest, expiry=expiry)
        assert expiry.at == Timestamp(micros=min(closing[: first + 1]))
    assert [read.open_until_us for read in pending] == closing
