"""Lake IO on Delta tables: create, append, insert-if-new, upsert, delete by key, replace a window
range, query.

Every write retries Delta commit conflicts with backoff, so concurrent writers (the stream and
reprocessing runs) never lose a write to a ``CommitFailedError``.

The lake is a folder or an object store (``s3://``, ``gs://``, ``hdfs://``); :meth:`Lake.of`
gives every reader and writer the storage options of the settings. On S3 a commit is a
conditional put (``If-None-Match: *`` on the next log entry, ``aws_conditional_put=etag``): of
two writers racing for one version, the store lets one win and the other retries, so no
locking provider is needed (and ``AWS_S3_ALLOW_UNSAFE_RENAME`` is never set).

A commit never deletes old log entries (Delta's default after each checkpoint): a writer's
clean-up racing another's made committed appends raise, and a retry would have written their
rows twice. Each table has one cleaner, :meth:`Lake.clean_log`, called by the stream's
:class:`Compactor` after its passes and by the nightly :meth:`Lake.maintain`.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from deltalake import (
    CommitProperties,
    DeltaTable,
    PostCommitHookProperties,
    Transaction,
    WriterProperties,
    write_deltalake,
)
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from betlake.core.config import Settings
from betlake.core.contract import TABLES, TIMESTAMP, TableSpec
from betlake.core.windowing import to_utc

log = logging.getLogger(__name__)
T = TypeVar("T")
_COMMIT_PATIENCE_SECONDS = 300.0  # how long a writer keeps retrying commit conflicts
# Every commit: a checkpoint each 100 versions, and no clean-up of the log (see the module's doc)
_NO_LOG_CLEANUP = PostCommitHookProperties(create_checkpoint=True, cleanup_expired_logs=False)


def _iso(value: datetime) -> str:
    return to_utc(value).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _sql_literal(value: object) -> str:
    return f"'{_iso(value)}'" if isinstance(value, datetime) else f"'{value}'"


def _properties(spec: TableSpec) -> dict[str, str]:
    """The Delta table properties of a table: how long its log keeps old versions (what
    :meth:`Lake.clean_log` may delete)."""
    return {} if spec.history is None else {"delta.logRetentionDuration": spec.history}


class Touched:
    """Where rows belong in a table, by the values they hold of some columns (string columns
    and columns with nulls are left out: see :meth:`Lake.scan`).

    Used three ways: tuple filters choosing the files to open (by the Delta log's partition
    values and statistics, before any file is read), a dataset filter for the rows, and a
    merge predicate on the target. Without them every read and merge of a table went through
    all its files (``benchmarks/commit_cost``: a gold upsert at 200-300 files, 629 -> 125 ms)."""

    def __init__(self, values: dict[str, pa.Array]) -> None:
        self.values = {
            column: column_values
            for column, column_values in values.items()
            if not pa.types.is_string(column_values.type) and not column_values.null_count
        }

    @classmethod
    def keys_of(cls, spec: TableSpec, data: pa.Table) -> Touched:
        """The partition and key values of ``data``'s rows."""
        columns = dict.fromkeys([*spec.partition_by, *spec.key])
        return cls({column: pc.unique(data.column(column)) for column in columns})

    def files(self) -> list[tuple[str, str, list]]:
        return [(column, "in", values.to_pylist()) for column, values in self.values.items()]

    def rows(self) -> ds.Expression:
        where = ds.scalar(True)
        for column, values in self.values.items():
            where &= ds.field(column).isin(values)
        return where

    def target_predicates(self, alias: str) -> list[str]:
        return [
            f"{alias}.{column} IN ({', '.join(map(_sql_literal, values.to_pylist()))})"
            for column, values in self.values.items()
        ]


def window_range_predicate(start: datetime, end: datetime) -> str:
    """Delta predicate for windows in [start, end), naming the partition column for pruning."""
    last_day = (to_utc(end) - timedelta(microseconds=1)).date()
    return (
        f"window_date >= '{to_utc(start).date()}' AND window_date <= '{last_day}' "
        f"AND window_start >= '{_iso(start)}' AND window_start < '{_iso(end)}'"
    )


def _time_range(
    start: datetime, end: datetime, column: str, day_column: str
) -> tuple[ds.Expression, list[tuple[str, str, object]]]:
    """``column`` in [start, end), pruned by its date partition column: as a dataset filter of
    the rows and as tuple filters of the files (see :meth:`Lake.scan`)."""
    start, end = to_utc(start), to_utc(end)
    last_day = (end - timedelta(microseconds=1)).date()
    rows = (
        (ds.field(day_column) >= pa.scalar(start.date(), pa.date32()))
        & (ds.field(day_column) <= pa.scalar(last_day, pa.date32()))
        & (ds.field(column) >= pa.scalar(start, TIMESTAMP))
        & (ds.field(column) < pa.scalar(end, TIMESTAMP))
    )
    files = [(day_column, ">=", start.date()), (day_column, "<=", last_day),
             (column, ">=", start), (column, "<", end)]  # fmt: skip
    return rows, files


def check_in_range(rows: pa.Table, start: datetime, end: datetime) -> None:
    """Raise ValueError unless every row's window_start is in [start, end): only such rows can
    replace that range."""
    starts = rows.column("window_start")
    if rows.num_rows and (
        pc.min(starts).as_py() < to_utc(start) or pc.max(starts).as_py() >= to_utc(end)
    ):
        raise ValueError(f"rows outside [{start}, {end}) cannot replace that range")


# The tables whose log the stream's compactor cleans (see Compactor)
SHORT_LOGGED = tuple(name for name, spec in TABLES.items() if spec.history is not None)

# Versions a lake brings an opened table forward before opening it afresh: past that, the
# replay of its entries costs more than an open (benchmarks/commit_cost).
_KEPT_VERSIONS = 50


def with_commit_retry(write: Callable[[], T], what: str) -> T:
    """Run a Delta write, retrying commit conflicts with jittered exponential backoff for up to
    :data:`_COMMIT_PATIENCE_SECONDS` (a time budget, not a count of attempts: on a slow store,
    HDFS or S3 on a busy machine, one attempt takes long and a busy writer wins many races)."""
    deadline = time.monotonic() + _COMMIT_PATIENCE_SECONDS
    attempt = 0
    while True:
        attempt += 1
        try:
            return write()
        except CommitFailedError:
            pause = min(5.0, 0.05 * 2**attempt) * (0.5 + random.random())
            if time.monotonic() + pause > deadline:
                raise
            log.info("commit conflict on %s (attempt %d), retrying in %.2fs", what, attempt, pause)
            time.sleep(pause)


def storage_options(settings: Settings) -> dict[str, str] | None:
    """The delta-rs (object_store) options for the settings' lake root, or None (a folder,
    or HDFS, whose client reads the Hadoop configuration itself)."""
    scheme = settings.lake.partition("://")[0]
    if scheme == "s3":
        options = {
            "aws_region": settings.s3_region,
            "aws_conditional_put": "etag",  # commits are put-if-absent: safe concurrent writers
            "aws_endpoint_url": settings.s3_endpoint,
            "aws_allow_http": "true" if (settings.s3_endpoint or "").startswith("http:") else None,
            "aws_access_key_id": settings.s3_access_key_id,
            "aws_secret_access_key": settings.s3_secret_access_key,
            "aws_session_token": settings.s3_session_token,
        }
    elif scheme == "gs":
        options = {"google_service_account": settings.gcs_credentials}
    else:
        return None
    return {key: value for key, value in options.items() if value is not None}


class _Held:
    """A lake's one object of a table, the lock its users take, and the version it was opened at."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.table: DeltaTable | None = None
        self.opened_at = 0


class Lake:
    """The Delta tables under one root: a local folder or a ``s3://``, ``gs://`` or ``hdfs://``
    URI (see :meth:`of`)."""

    def __init__(self, root: str, storage_options: dict[str, str] | None = None) -> None:
        self.root = root.rstrip("/")
        self.local = "://" not in self.root  # a folder, not an object store
        self.storage_options = storage_options
        self._held: dict[str, _Held] = {}  # the tables this lake has opened (see held)
        self._held_lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"root": self.root, "storage_options": self.storage_options}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # a lake sent to a worker opens afresh

    @classmethod
    def of(cls, settings: Settings) -> Lake:
        """The lake of the settings, with the storage options of its root."""
        return cls(settings.lake, storage_options(settings))

    def uri(self, name: str) -> str:
        return f"{self.root}/{name}"

    def open(self, name: str) -> DeltaTable | None:
        """A table object of the caller's own, at the latest version; None if the table has
        not been created yet."""
        try:
            return DeltaTable(self.uri(name), storage_options=self.storage_options)
        except TableNotFoundError:
            return None

    @contextmanager
    def held(self, name: str, create: TableSpec | None = None) -> Iterator[DeltaTable | None]:
        """The lake's object of the table, at its latest version, for this thread alone while
        the block runs (a table object is not to be used by two threads at once); None if the
        table has not been created yet, unless ``create`` (its spec) creates it empty.

        One object per table serves every thread of a writer: it is brought forward from the
        log entries added since its last use, once for all of them, instead of once per thread
        (the soak's readers spent half their time replaying the log). After
        :data:`_KEPT_VERSIONS` it is opened afresh: an object replays every entry since it was
        opened, not from the latest checkpoint.
        """
        with self._held_lock:
            held = self._held.setdefault(name, _Held())
        with held.lock:
            if held.table is not None:
                if self._moved_on(name, held.table.version()):
                    held.table.update_incremental()
                if held.table.version() - held.opened_at >= _KEPT_VERSIONS:
                    held.table = None
            if held.table is None:
                held.table = self.open(name)
                if held.table is None and create is not None:
                    DeltaTable.create(
                        self.uri(name),
                        create.schema,
                        partition_by=list(create.partition_by) or None,
                        mode="ignore",
                        configuration=_properties(create) or None,
                        storage_options=self.storage_options,
                        post_commithook_properties=_NO_LOG_CLEANUP,
                    )
                    held.table = self.open(name)
                held.opened_at = -1 if held.table is None else held.table.version()
            yield held.table

    def _moved_on(self, name: str, version: int) -> bool:
        """Whether the table may have versions after ``version``. In a local folder, whether
        the next version's log entry exists, or (:meth:`clean_log` deletes entries a checkpoint
        covers) a checkpoint after it: a look-up or two, where delta-rs brings a table forward
        by listing the whole log folder, a cost that grows with every version the log keeps
        (``benchmarks/commit_cost``). Elsewhere (object stores list from an offset): always."""
        if not self.local:
            return True
        log_folder = f"{self.uri(name)}/_delta_log"
        if os.path.exists(f"{log_folder}/{version + 1:020d}.json"):
            return True
        try:
            with open(f"{log_folder}/_last_checkpoint") as last:
                return json.load(last)["version"] > version
        except FileNotFoundError:
            return False

    def version(self, name: str) -> int:
        """The table's latest version; -1 if it has not been created yet."""
        with self.held(name) as table:
            return -1 if table is None else table.version()

    def ensure(self, spec: TableSpec) -> None:
        """Create the table empty with the contract's schema if it is missing."""
        with self.held(spec.name, create=spec):
            pass

    def _write(self, spec: TableSpec, data: pa.Table, **options: object) -> None:
        data = data.select(spec.schema.names).cast(spec.schema)

        def write() -> None:  # each attempt on the table as it is now (held brings it forward)
            partition_by = list(spec.partition_by) or None
            with self.held(spec.name, create=spec) as table:
                write_deltalake(table, data, partition_by=partition_by,
                                post_commithook_properties=_NO_LOG_CLEANUP, **options)  # fmt: skip

        with_commit_retry(write, spec.name)

    def append(
        self, spec: TableSpec, data: pa.Table, progress: tuple[str, int] | None = None
    ) -> None:
        """Append rows as they are; ``progress``: a writer's name and how far it has written
        (recorded in the same commit, see :meth:`progress`)."""
        if data.num_rows:
            properties = None
            if progress is not None:
                properties = CommitProperties(app_transactions=[Transaction(*progress)])
            self._write(spec, data, mode="append", commit_properties=properties)

    def progress(self, spec: TableSpec, writer: str) -> int | None:
        """How far ``writer`` has written to the table, by its last :meth:`append` (Delta's
        transaction identifiers: read from the log, not the data), or None."""
        with self.held(spec.name) as table:
            return None if table is None else table.transaction_version(writer)

    def overwrite(self, spec: TableSpec, data: pa.Table) -> None:
        """Replace the whole table in one commit (reference loads)."""
        self._write(spec, data, mode="overwrite", schema_mode="overwrite")

    def replace_windows(
        self, spec: TableSpec, data: pa.Table, start: datetime, end: datetime
    ) -> None:
        """Replace every row with window_start in [start, end) by ``data``, in one commit.

        Windows in the range that ``data`` lacks disappear; rows outside it are untouched.
        """
        check_in_range(data, start, end)
        self._write(spec, data, mode="overwrite", predicate=window_range_predicate(start, end))

    def _merge(self, spec: TableSpec, source: pa.Table, build: Callable) -> dict:
        """Merge ``source`` on the partition columns and key, retrying commit conflicts."""
        on = [*spec.partition_by, *spec.key]
        predicate = " AND ".join(
            [
                *(f"t.{col} = s.{col}" for col in on),
                *Touched.keys_of(spec, source).target_predicates("t"),
            ]
        )

        def merge() -> dict:
            with self.held(spec.name, create=spec) as table:
                merger = table.merge(source, predicate, source_alias="s", target_alias="t",
                                     post_commithook_properties=_NO_LOG_CLEANUP)  # fmt: skip
                return build(merger).execute()

        return with_commit_retry(merge, spec.name)

    def upsert(self, spec: TableSpec, data: pa.Table, update_when: str | None = None) -> None:
        """Insert rows with new keys; replace existing rows (only where ``update_when`` holds,
        a predicate over ``s.`` source and ``t.`` target columns)."""
        if data.num_rows:
            self._merge(
                spec,
                first_per_key(data, spec.key).select(spec.schema.names).cast(spec.schema),
                lambda m: m.when_matched_update_all(
                    predicate=update_when
                ).when_not_matched_insert_all(),
            )

    def rows_to_upsert(self, spec: TableSpec, data: pa.Table, update_when: str) -> pa.Table:
        """The rows of ``data`` that :meth:`upsert` with ``update_when`` would write against
        the table as it is now: new keys, and existing keys where the predicate holds (the
        same SQL, evaluated by DuckDB over the rows of the partitions ``data`` touches)."""
        on = [*spec.partition_by, *spec.key]
        touched = Touched.keys_of(spec, data)
        con = duckdb.connect()
        con.register("s", data.select(spec.schema.names).cast(spec.schema))
        con.register("t", self.scan(spec, where=touched.rows(), files=touched.files()))
        join = " AND ".join(f"t.{column} = s.{column}" for column in on)
        query = (
            f"SELECT s.* FROM s LEFT JOIN t ON {join} WHERE t.{on[-1]} IS NULL OR ({update_when})"
        )
        return con.sql(query).to_arrow_table()

    def delete_matching(self, spec: TableSpec, keys: pa.Table) -> int:
        """Delete, in one commit, the rows whose partition columns and key match a row of
        ``keys`` (which holds at least those columns); returns how many were deleted."""
        if not keys.num_rows:
            return 0
        on = [*spec.partition_by, *spec.key]
        source = keys.select(on).cast(pa.schema([spec.schema.field(col) for col in on]))
        done = self._merge(spec, first_per_key(source, on), lambda m: m.when_matched_delete())
        return int(done["num_target_rows_deleted"])

    def insert_new(self, spec: TableSpec, data: pa.Table) -> int:
        """Append the rows whose key is not in the table yet (the first of each key in ``data``).

        Returns how many rows were added: writing the same rows twice adds nothing. The keys
        are looked up (pruned by partition) and the rest appended: appends never conflict, so
        a busy concurrent writer cannot starve this one. Two writers must not add the same key
        at the same moment (the stream reads each key's partition with one reader).
        """
        data = self.unseen(spec, data)
        self.append(spec, data)
        return data.num_rows

    def unseen(self, spec: TableSpec, data: pa.Table) -> pa.Table:
        """The first row of each key in ``data`` that the table does not hold."""
        data = first_per_key(data, spec.key)
        if not data.num_rows:
            return data
        touched = Touched.keys_of(
            spec, data
        )  # prune by partition and key_within; keys matched in memory
        where, files = touched.rows(), touched.files()
        for column in spec.key_within:
            if data.column(column).null_count == 0:
                low, high = pc.min_max(data.column(column)).values()
                where &= (ds.field(column) >= low) & (ds.field(column) <= high)
                files += [(column, ">=", low.as_py()), (column, "<=", high.as_py())]
        stored = self.scan(spec, list(spec.key), where, files)
        if stored.num_rows:
            seen = pc.is_in(_key_strings(data, spec.key), value_set=_key_strings(stored, spec.key))
            data = data.filter(pc.invert(seen))
        return data

    def scan(
        self,
        spec: TableSpec,
        columns: Iterable[str] | None = None,
        where: ds.Expression | None = None,
        files: list[tuple[str, str, object]] | None = None,
    ) -> pa.Table:
        """Read the rows matching ``where`` (partition and statistics pruning apply) from the
        files ``files`` selects (tuple filters, judged on the Delta log before a file is
        opened: a dataset of a table's every file costs about half a millisecond a file).

        Keep string columns out of ``where`` and filter them after reading: delta-rs writes
        them as string views, which pyarrow 25 cannot compare with the statistics.
        """
        with self.held(spec.name) as table:
            if table is None:
                return spec.schema.empty_table().select(list(columns or spec.schema.names))
            dataset = table.to_pyarrow_dataset(file_pruning_predicate=files or None)
        return dataset.to_table(columns=list(columns) if columns else None, filter=where)

    def scan_range(
        self,
        spec: TableSpec,
        start: datetime,
        end: datetime,
        columns: Iterable[str] | None = None,
        *,
        column: str = "window_start",
        day_column: str = "window_date",
    ) -> pa.Table:
        """The rows with ``column`` in [start, end) (``window_start``/``window_date`` for gold,
        ``event_time``/``event_date`` for bronze), from the files that can hold them."""
        rows, files = _time_range(start, end, column, day_column)
        return self.scan(spec, columns, rows, files)

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection where every existing lake table is a view by its name.

        In a local folder DuckDB reads the table's files itself: a table holds files with
        string columns (writes) and with string views (delta-rs's merges), and pyarrow 25
        cannot apply the string filters DuckDB pushes into a dataset of both (the demo's
        ``pane <> 'BATCH'`` over gold failed). Elsewhere, and for a table without files, the
        table's pyarrow dataset."""
        con = duckdb.connect()
        for name, spec in TABLES.items():
            with self.held(name) as table:
                if table is None:
                    continue
                files = table.file_uris()
                if not self.local or not files:
                    con.register(name, table.to_pyarrow_dataset())
                    continue
            listed = ", ".join("'" + path.replace("'", "''") + "'" for path in files)
            columns = ", ".join(f'"{column}"' for column in spec.schema.names)
            con.execute(f"CREATE VIEW {name} AS SELECT {columns} "
                        f"FROM read_parquet([{listed}], hive_partitioning = true)")  # fmt: skip
        return con

    def compact(self, name: str, partition: dict[str, str] | None = None, **options) -> dict:
        """Rewrite the small files of a table (of one partition: column -> value) into few
        large ones, in one commit; appends may go on meanwhile. Returns delta-rs' metrics."""
        filters = [(column, "=", value) for column, value in (partition or {}).items()]

        def compact() -> dict:
            with self.held(name) as table:
                if table is None:
                    return {"numFilesAdded": 0, "numFilesRemoved": 0}
                return table.optimize.compact(partition_filters=filters or None,
                                              post_commithook_properties=_NO_LOG_CLEANUP,
                                              **options)  # fmt: skip

        return with_commit_retry(compact, name)

    def clean_log(self, name: str) -> None:
        """Delete the table's log entries that a checkpoint covers and that are older than its
        log retention (:func:`_properties`; Delta's 30 days unless its spec says otherwise).
        Commits never do (see the module's doc): this is each table's one cleaner. A failure
        (the store away, or the nightly upkeep cleaning beside a stream) is logged, not raised:
        the log is only longer until the next cleaning."""
        try:
            with self.held(name) as table:
                if table is not None:
                    table.cleanup_metadata()
        except (OSError, DeltaError):
            log.warning("cleaning the log of %s failed", name, exc_info=True)

    def maintain(self, name: str, retention_hours: int = 168) -> dict[str, int]:
        """Compact small files, vacuum files unreferenced for ``retention_hours``, and clean
        the log; a table made before its spec's properties (:func:`_properties`) is given
        them."""
        compacted = self.compact(name)
        with self.held(name) as table:  # as compacted: what it replaced is unreferenced now
            if table is None:
                return {"files_added": 0, "files_removed": 0, "files_vacuumed": 0}
            wanted = _properties(TABLES[name]) if name in TABLES else {}
            if wanted.items() - table.metadata().configuration.items():
                table.alter.set_table_properties(wanted, post_commithook_properties=_NO_LOG_CLEANUP)
            vacuumed = table.vacuum(
                retention_hours=retention_hours, dry_run=False, enforce_retention_duration=False,
                post_commithook_properties=_NO_LOG_CLEANUP,
            )  # fmt: skip
        self.clean_log(name)
        return {
            "files_added": int(compacted["numFilesAdded"]),
            "files_removed": int(compacted["numFilesRemoved"]),
            "files_vacuumed": len(vacuumed),
        }


class Compactor:
    """Keeps the tables a long-running writer appends to few-filed: at most every
    ``every_seconds``, on a thread of its own, it compacts the partitions written since its
    last pass (delta-rs works without the GIL; appends go on meanwhile).

    A stream commits a few small files a second; without this, every later open, scan and
    commit of those tables reads more files than the last one (the soak of stop 15).

    Its files are kept small (``target_bytes``): a pass rewrites every file under the target
    with the new ones, so a large target rewrites a growing file again and again, holding it in
    memory each time (64 MiB: +300 MiB RSS every pass in the soak); and their row groups are
    small (``row_group_rows``): delta-rs holds a row group in memory until it is written (a pass
    over 300,000 bronze rows, 30 s of the soak: +34-46 MiB of peak RSS with 16,384 rows, +10-31
    MiB with 4,096). They are compressed as delta-rs compresses an append (Snappy): writer
    properties of one's own replace its default, which compresses nothing (bronze 3.2 times
    larger). The daily maintenance (:meth:`Lake.maintain`) makes them large.

    After each pass it cleans the log (:meth:`Lake.clean_log`) of every table that keeps a
    short one (``TableSpec.history``: the tables a stream commits to), gold included, which
    it does not compact: a commit lists the whole log folder, so at Delta's 30 days each of
    the stream's commits cost more than the last (30-minute soak of stop 26)."""

    def __init__(
        self,
        lake: Lake,
        every_seconds: float = 30.0,
        target_bytes: int = 16 << 20,
        row_group_rows: int = 4_096,
    ) -> None:
        self.lake = lake
        self.every_seconds = every_seconds
        self.target_bytes = target_bytes
        self.writer_properties = WriterProperties(
            max_row_group_size=row_group_rows, compression="SNAPPY"
        )
        self.lock = threading.Lock()
        self.written: dict[str, tuple[TableSpec, set[tuple]]] = {}  # since the last pass
        self.last_pass = time.monotonic()
        self.running: threading.Thread | None = None

    def wrote(self, spec: TableSpec, data: pa.Table) -> None:
        """Note rows appended to a table; start a pass if one is due and none runs."""
        if not data.num_rows:
            return
        columns = list(spec.partition_by)
        values = {()}
        if columns:
            distinct = data.select(columns).group_by(columns).aggregate([]).to_pydict()
            values = set(zip(*(map(str, distinct[c]) for c in columns), strict=True))
        with self.lock:
            self.written.setdefault(spec.name, (spec, set()))[1].update(values)
            now = time.monotonic()
            if now - self.last_pass < self.every_seconds or (
                self.running is not None and self.running.is_alive()
            ):
                return
            work, self.written, self.last_pass = self.written, {}, now
            self.running = threading.Thread(
                target=self._compact, args=(work,), name="compactor", daemon=True
            )
            self.running.start()

    def _compact(self, work: dict[str, tuple[TableSpec, set[tuple]]]) -> None:
        for name, (spec, partitions) in work.items():
            for values in sorted(partitions):
                partition = dict(zip(spec.partition_by, values, strict=True))
                try:
                    done = self.lake.compact(name, partition, target_size=self.target_bytes,
                                             max_concurrent_tasks=1,
                                             writer_properties=self.writer_properties)  # fmt: skip
                except Exception:  # compaction only saves time: the stream goes on without it
                    log.warning("compacting %s %s failed", name, partition, exc_info=True)
                    continue
                log.info("compacted %s %s: %d files into %d", name, partition,
                         done["numFilesRemoved"], done["numFilesAdded"])  # fmt: skip
        for name in SHORT_LOGGED:
            self.lake.clean_log(name)


class KeyIndex:
    """The keys a table holds, for one writer adding many batches (a file ingest): read once
    per partition value the batches touch, then kept up to date with what this writer adds,
    instead of a scan per batch. Like :meth:`Lake.insert_new`, it assumes no other writer adds
    the same keys meanwhile."""

    def __init__(self, lake: Lake, spec: TableSpec) -> None:
        self.lake, self.spec = lake, spec
        self.loaded: set[tuple] = set()  # partition values whose stored keys are in ``keys``
        self.keys: set[str] = set()

    def claim_new(self, data: pa.Table) -> pa.Table:
        """The first row of each key in ``data`` that the table does not hold yet; from now on
        their keys count as held (the caller writes these rows)."""
        self._load(data)
        held, fresh = self.keys, []
        for key in _key_strings(data, self.spec.key).to_pylist():
            fresh.append(key not in held)
            held.add(key)
        return data.filter(pa.array(fresh, pa.bool_()))

    def _load(self, data: pa.Table) -> None:
        """Read the stored keys of the partitions of ``data`` not read yet."""
        partitions = list(self.spec.partition_by)
        touched = {()}
        if partitions:
            values = data.select(partitions).group_by(partitions).aggregate([]).to_pydict()
            touched = set(zip(*(values[column] for column in partitions), strict=True))
        missing = sorted(touched - self.loaded)
        if not missing:
            return
        where = None
        for i, column in enumerate(partitions):
            clause = ds.field(column).isin(pa.array([row[i] for row in missing]))
            where = clause if where is None else where & clause
        stored = self.lake.scan(self.spec, list(self.spec.key), where)
        self.keys.update(_key_strings(stored, self.spec.key).to_pylist())
        self.loaded.update(missing)


def _key_strings(data: pa.Table, key: tuple[str, ...]) -> pa.Array:
    """One string per row identifying its key (the key column itself for a one-column key)."""
    columns = [pc.cast(data.column(k), pa.string()) for k in key]
    joined = columns[0] if len(columns) == 1 else pc.binary_join_element_wise(*columns, "\x1f")
    return joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined


def first_per_key(data: pa.Table, key: Iterable[str]) -> pa.Table:
    """The first row of each key, in input order."""
    key = list(key)
    if data.num_rows < 2:
        return data
    indexed = data.select(key).append_column("__row", pa.array(np.arange(data.num_rows)))
    first = indexed.group_by(key, use_threads=False).aggregate([("__row", "min")])
    if first.num_rows == data.num_rows:
        return data  # no key twice
    keep = np.zeros(data.num_rows, dtype=bool)
    keep[first.column("__row_min").to_numpy()] = True
    return data.filter(pa.array(keep))
