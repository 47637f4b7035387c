"""The ``betlake`` command line."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from betlake.core.config import BetlakeError, ConfigError, Settings
from betlake.core.contract import PARTITION_FORMAT
from betlake.core.processes import restore_default_signals
from betlake.core.windowing import Windowing, to_utc
from betlake.local.services import SERVICES

console = Console()
errors = Console(stderr=True, soft_wrap=True)
_TIME_FORMATS = ("%Y-%m-%d", PARTITION_FORMAT)


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line, not a usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def timestamp(text: str) -> datetime:
    """An argument time: ISO 8601 (naive means UTC), a date, or a partition key."""
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            pass
    try:
        return to_utc(datetime.fromisoformat(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (use e.g. 2026-11-24T10:05:00Z or 2026-11-24)"
        ) from None


def duration(text: str) -> timedelta:
    """A span such as 90s, 15m, 6h or 1d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        return timedelta(seconds=float(text[:-1]) * units[text[-1]])
    except (KeyError, ValueError, IndexError):
        raise argparse.ArgumentTypeError(
            f"not a duration: {text!r} (use e.g. 90s, 15m, 6h, 1d)"
        ) from None


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"not a fraction between 0 and 1: {text!r}")
    return value


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


# ---------------------------------------------------------------- commands


def cmd_local(args: argparse.Namespace, settings: Settings) -> None:
    service = SERVICES[args.service]
    if args.action == "start":
        console.print(service.start(settings))
    elif args.action == "stop":
        stopped = service.stop(settings)
        console.print(f"{service.name} stopped" if stopped else f"{service.name} was not running")
    elif args.action == "status":
        console.print(service.status(settings))
    else:
        for name, value in service.env(settings).items():
            print(f"export {name}={shlex.quote(value)}")


def cmd_broker(args: argparse.Namespace, settings: Settings) -> None:
    cmd_local(argparse.Namespace(action=args.action, service="kafka"), settings)


def cmd_generate(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.local.generate import TelemetrySpec, generate_telemetry

    spec = TelemetrySpec(
        count=args.count,
        start=args.start,
        span=args.span,
        seed=args.seed,
        disorder_seconds=args.disorder_seconds,
        late_fraction=args.late_fraction,
        duplicate_fraction=args.duplicate_fraction,
        malformed_fraction=args.malformed_fraction,
        unknown_fraction=args.unknown_fraction,
    )
    messages = generate_telemetry(spec, settings.reference)
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"generating to {args.to}", total=spec.count)
        if str(args.to) in ("kafka", "source"):
            from betlake.core.transport import describe_source, produce_to_source

            if str(args.to) == "kafka":
                settings = replace(settings, source="kafka")
            encoded = ((key, line.encode()) for key, line in messages)
            for sent in produce_to_source(settings, encoded, args.rate):
                progress.update(task, completed=min(sent, spec.count))
            where = describe_source(settings)
        else:
            args.to.parent.mkdir(parents=True, exist_ok=True)
            with args.to.open("w") as out:
                for sent, (_, line) in enumerate(messages, 1):
                    out.write(line + "\n")
                    if sent % 10_000 == 0:
                        progress.update(task, completed=min(sent, spec.count))
            where = str(args.to)
    console.print(f"sent {spec.count} events, plus duplicates and malformed ones, to {where}")


def cmd_produce(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.core.transport import describe_source, key_of, produce_to_source

    def lines():
        with args.file.open("rb") as source:
            for line in source:
                payload = line.removesuffix(b"\n")
                yield key_of(payload), payload

    if not args.file.is_file():
        raise BetlakeError(f"no such file: {args.file}")
    sent = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task(f"producing {args.file}", total=None)
        for sent in produce_to_source(settings, lines(), args.rate):
            progress.update(task, completed=sent)
    console.print(f"sent {sent} lines of {args.file} to {describe_source(settings)}")


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.core.ingest import ingest_files

    console.print(str(ingest_files(settings, args.files)))


def cmd_stream(args: argparse.Namespace, settings: Settings) -> None:
    import logging

    from streaming.job import run_stream

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    logging.getLogger("betlake").setLevel(logging.INFO)
    counters = run_stream(settings, drain_when_idle=args.drain_when_idle)
    console.print("stream stopped: " + ", ".join(f"{k} {v}" for k, v in counters.items()))
    # Everything is durable now. The runner's worker threads (gRPC, librdkafka) may still be
    # winding down, and tearing the interpreter down under them can crash it: leave at once.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def cmd_dataflow_job(args: argparse.Namespace, settings: Settings) -> None:
    from streaming.batch import build_reprocess
    from streaming.job import build_stream
    from streaming.runners import dataflow_job

    if not any(arg.startswith("--dataflow_job_file=") for arg in settings.pipeline_args):
        raise ConfigError(
            "add --dataflow_job_file=PATH to BETLAKE_PIPELINE_ARGS: where to write the job"
        )
    streaming = args.pipeline == "stream"
    if not streaming and (args.start is None or args.end is None):
        raise ConfigError("dataflow-job reprocess needs --start and --end")

    def build(pipeline: object) -> None:
        if streaming:  # the partitions are data of the graph, listed at run time
            build_stream(pipeline, settings, [0])
        else:
            build_reprocess(pipeline, settings, args.start, args.end)

    job = dataflow_job(settings, build, streaming=streaming)
    transforms = job["pipeline"]["components"]["transforms"]
    console.print(f"the {args.pipeline} pipeline translates for Dataflow ({job['job']['type']}, "
                  f"{len(transforms)} transforms); not submitted")  # fmt: skip


def cmd_reference(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.cli.runs import run_assets

    tables = ["bet_sites", "players", "fx_rates"]
    what = f"loading the reference data from {settings.reference}"
    done = run_assets(settings, tables, console, verbose=args.verbose, what=what, steps=3)
    rows = ", ".join(f"{t} {done.materialized.get(t, {}).get('rows', 0):,}" for t in tables)
    passed = sum(done.checks.values())
    console.print(f"reference data loaded from {settings.reference}: {rows} rows; "
                  f"{passed}/{len(done.checks)} checks passed; run {done.run_id} "
                  f"{done.link}")  # fmt: skip


def reprocess_windows(
    settings: Settings, start: datetime, end: datetime, verbose: bool = False
) -> str:
    """Recompute the windows in [start, end) as one Dagster run on the local instance; returns
    the summary: range, windows, events, rows changed, the run and its link."""
    from betlake.cli.runs import run_assets

    windowing = Windowing.of(settings)
    start, end = windowing.check_range(start, end, ("--start", "--end"))
    width = windowing.width
    if start < settings.partitions_start:
        raise BetlakeError(
            f"{start:%Y-%m-%d} is before the first partition "
            f"({settings.partitions_start:%Y-%m-%d}; set BETLAKE_PARTITIONS_START)"
        )
    if end > datetime.now(UTC):
        raise BetlakeError("the end is in the future: only whole, past windows can be recomputed")
    from betlake.defs.gold import window_partitions

    key = window_partitions(settings).get_partition_key_for_timestamp
    windows = int((end - start) / width)
    span = f"[{start:%Y-%m-%d %H:%M}, {end:%Y-%m-%d %H:%M}) UTC"
    done = run_assets(
        settings,
        ["site_window_stats"],
        console,
        (key(start.timestamp()), key((end - width).timestamp())),
        verbose=verbose,
        what=f"recomputing {windows} windows {span}",
        steps=windows,
    )
    gold = done.materialized.get("site_window_stats", {})
    return (f"recomputed {windows} windows {span}: {gold.get('events', 0):,} events, "
            f"{gold.get('rows', 0):,} rows ({gold.get('rows_changed', 0):,} changed); "
            f"run {done.run_id} {done.link}")  # fmt: skip


def cmd_reprocess(args: argparse.Namespace, settings: Settings) -> None:
    console.print(reprocess_windows(settings, args.start, args.end, args.verbose))


def cmd_discard(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.core.discard import discard

    with console.status("moving the matching events to telemetry_discarded"):
        done = discard(settings, args.start, args.end, args.reason, args.site, args.player,
                       args.source)  # fmt: skip
    recomputed = reprocess_windows(settings, done.first_window, done.end_window, args.verbose)
    console.print(f"{done.discard_id}: {done.events} events moved to telemetry_discarded "
                  f"(undo: betlake restore {done.discard_id}); {recomputed}")  # fmt: skip


def cmd_restore(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.core.discard import restore

    with console.status(f"putting the events of {args.discard_id} back in telemetry_raw"):
        done = restore(settings, args.discard_id)
    recomputed = reprocess_windows(settings, done.first_window, done.end_window, args.verbose)
    console.print(f"{done.discard_id}: {done.events} events back in telemetry_raw; "
                  f"{recomputed}")  # fmt: skip


def cmd_status(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.cli.status import show_status

    show_status(settings, console)


def cmd_report(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.cli.report import write_report
    from betlake.core.lake import Lake

    drawn = write_report(Lake.of(settings), args.start, args.end, args.out)
    console.print(f"wrote {args.out} ({drawn} points of GGR and active players)")


def cmd_ui(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.core.processes import run_server

    console.print(f"Dagster UI on http://127.0.0.1:{args.port} (Ctrl-C stops it)")
    from betlake.cli.runs import dagster_home

    command = [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(args.port)]
    run_server(command, {**os.environ, "DAGSTER_HOME": str(dagster_home(settings))})


def cmd_query(args: argparse.Namespace, settings: Settings) -> None:
    import duckdb

    from betlake.core.lake import Lake

    try:
        result = Lake.of(settings).connect().execute(args.sql)
        rows = result.fetchmany(args.limit)
    except duckdb.Error as error:
        raise BetlakeError(str(error).splitlines()[0]) from None
    table = Table(*(column[0] for column in result.description or []))
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)


def cmd_maintain(args: argparse.Namespace, settings: Settings) -> None:
    from betlake.core.contract import TABLES
    from betlake.core.lake import Lake

    lake = Lake.of(settings)
    for name in TABLES:
        console.print(f"{name}: {lake.maintain(name, args.retention_hours)}")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="betlake", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    local = commands.add_parser("local", help="the local stand-ins: start, stop, status, env")
    local.add_argument("action", choices=["start", "stop", "status", "env"])
    local.add_argument("service", choices=sorted(SERVICES))
    local.set_defaults(run=cmd_local)

    broker = commands.add_parser("broker", help="the local Kafka broker (= local ... kafka)")
    broker.add_argument("action", choices=["start", "stop", "status"])
    broker.set_defaults(run=cmd_broker)

    generate = commands.add_parser("generate", help="synthetic telemetry to a file or a source")
    generate.add_argument(
        "--to", type=Path, required=True,
        help="a JSON lines file, kafka, or source (the BETLAKE_SOURCE transport)",
    )  # fmt: skip
    generate.add_argument("--rate", type=float, help="messages a second (default: max)")
    generate.add_argument("--count", type=positive_int, default=100_000, help="valid events")
    yesterday = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(
        days=1
    )
    generate.add_argument("--start", type=timestamp, default=yesterday, help="first event time")
    generate.add_argument("--span", type=duration, default=timedelta(days=1), help="e.g. 1d")
    generate.add_argument("--seed", type=int, default=1)
    generate.add_argument("--disorder-seconds", type=float, default=20.0)
    generate.add_argument("--late-fraction", type=fraction, default=0.002)
    generate.add_argument("--duplicate-fraction", type=fraction, default=0.01)
    generate.add_argument("--malformed-fraction", type=fraction, default=0.002)
    generate.add_argument("--unknown-fraction", type=fraction, default=0.002)
    generate.set_defaults(run=cmd_generate)

    produce = commands.add_parser(
        "produce", help="replay a JSON lines file, unchanged, into the configured source"
    )
    produce.add_argument("file", type=Path)
    produce.add_argument("--rate", type=float, help="lines a second (default: max)")
    produce.set_defaults(run=cmd_produce)

    ingest = commands.add_parser("ingest", help="load JSON lines files into telemetry_raw")
    ingest.add_argument("files", type=Path, nargs="+")
    ingest.set_defaults(run=cmd_ingest)

    stream = commands.add_parser("stream", help="run the streaming job until stopped")
    stream.add_argument(
        "--drain-when-idle", type=float, metavar="SECONDS",
        help="end once no message has arrived for this long (every open window fires)",
    )  # fmt: skip
    stream.set_defaults(run=cmd_stream)

    dataflow = commands.add_parser(
        "dataflow-job", help="translate a pipeline for Dataflow offline (to --dataflow_job_file)"
    )
    dataflow.add_argument("pipeline", choices=["stream", "reprocess"])
    dataflow.add_argument("--start", type=timestamp, help="reprocess: first window")
    dataflow.add_argument("--end", type=timestamp, help="reprocess: end of the range")
    dataflow.set_defaults(run=cmd_dataflow_job)

    reference = commands.add_parser("reference", help="load the reference data (Dagster run)")
    reference.add_argument("--verbose", action="store_true", help="print the Dagster run's log")
    reference.set_defaults(run=cmd_reference)

    reprocess = commands.add_parser("reprocess", help="recompute windows [start, end) (Dagster)")
    reprocess.add_argument("--start", type=timestamp, required=True)
    reprocess.add_argument("--end", type=timestamp, required=True)
    reprocess.add_argument("--verbose", action="store_true", help="print the Dagster run's log")
    reprocess.set_defaults(run=cmd_reprocess)

    ui = commands.add_parser("ui", help="the Dagster UI and daemon (dagster dev) on 127.0.0.1")
    ui.add_argument("--port", type=positive_int, default=3000)
    ui.set_defaults(run=cmd_ui)

    discard = commands.add_parser("discard", help="take events out of the figures, with a trace")
    discard.add_argument("--start", type=timestamp, required=True, help="event time, inclusive")
    discard.add_argument("--end", type=timestamp, required=True, help="event time, exclusive")
    discard.add_argument("--site", help="only this site_id")
    discard.add_argument("--player", help="only this player_id")
    discard.add_argument(
        "--source", choices=["kafka", "nats", "pubsub", "file"], help="only events from here"
    )
    discard.add_argument("--reason", required=True, help="why (kept in the audit table)")
    discard.add_argument("--verbose", action="store_true", help="print the Dagster run's log")
    discard.set_defaults(run=cmd_discard)

    restore = commands.add_parser("restore", help="undo a discard by its id")
    restore.add_argument("discard_id")
    restore.add_argument("--verbose", action="store_true", help="print the Dagster run's log")
    restore.set_defaults(run=cmd_restore)

    status = commands.add_parser("status", help="one screen of the system's state")
    status.set_defaults(run=cmd_status)

    report = commands.add_parser("report", help="a PNG of GGR and active players per window")
    report.add_argument("--start", type=timestamp, required=True)
    report.add_argument("--end", type=timestamp, required=True)
    report.add_argument("--out", type=Path, default=Path("reports/site_window_stats.png"))
    report.set_defaults(run=cmd_report)

    query = commands.add_parser("query", help="DuckDB SQL over the lake tables")
    query.add_argument("sql")
    query.add_argument("--limit", type=positive_int, default=50, help="rows to show")
    query.set_defaults(run=cmd_query)

    maintain = commands.add_parser("maintain", help="compact and vacuum every lake table")
    maintain.add_argument("--retention-hours", type=int, default=168)
    maintain.set_defaults(run=cmd_maintain)
    return parser


def main(argv: list[str] | None = None) -> int:
    restore_default_signals()
    args = build_parser().parse_args(argv)
    try:
        args.run(args, Settings.from_env())
    except BetlakeError as error:
        errors.print(f"[red]betlake {args.command}: {escape(str(error))}[/red]", highlight=False)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
