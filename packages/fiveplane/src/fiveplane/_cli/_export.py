"""``fiveplane export …``: ship the evidence ledger to SIEM, OpenTelemetry and SOAR sinks.

Exit codes: 0 everything delivered; 1 delivery failed (sink down past the retry budget, credentials
rejected, another exporter holds the sink) or events were dead-lettered; 2 bad input (no such
ledger, bad sinks file, missing secret, unknown sink).
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .._export._config import CONFIG_ENV, ExportConfigError, SinkConfig, build_sink, load_export_config
from .._export._exporter import Exporter, ExportFailed, ExportReport, RetryPolicy
from .._export._read import open_for_export
from .._export._store import ExportStore
from .._ledger import DEFAULT_URL, Ledger, LedgerError
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, console, die, err_console, print_json

app = typer.Typer(
    help="Ship evidence to SIEM, OpenTelemetry and SOAR sinks: at least once, in order, from a durable cursor.",
    no_args_is_help=True,
)

Db = Annotated[
    str, typer.Option("--db", envvar="FIVEPLANE_LEDGER_URL", help="Ledger database URL (sqlite:///… or postgresql+psycopg://…).")
]
Origin = Annotated[str | None, typer.Option("--origin", help="Which ledger, when the database holds several (its origin).")]
Config = Annotated[
    Path | None,
    typer.Option("--config", "-c", envvar=CONFIG_ENV, help="Sinks file (YAML). Secrets come from environment variables only."),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


def _die(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    die(escape(message), code)


def _open(db: str, origin: str | None) -> Ledger:
    try:
        return open_for_export(db, origin)
    except (FileNotFoundError, LookupError, LedgerError, ValueError) as exc:
        _die(str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver error opening the database is bad input here
        _die(f"cannot open ledger {db}: {type(exc).__name__}: {exc}")


def _sink_config(sink: str, config: Path | None, adhoc: dict[str, Any]) -> SinkConfig:
    given = {k: v for k, v in adhoc.items() if v is not None}
    try:
        cfg = load_export_config(config)
        if any(s.name == sink for s in cfg.sinks):
            if given:
                _die(f"sink {sink!r} is defined in {config}; drop --type/--endpoint/--path/--format or use another name")
            return cfg.sink(sink)
        if "type" not in given:
            known = ", ".join(s.name for s in cfg.sinks) or "none"
            _die(
                f"no sink named {sink!r} (configured: {known}); define it in a sinks file (--config) or pass --type and --endpoint/--path"
            )
        return SinkConfig.model_validate({"name": sink, **given})
    except ExportConfigError as exc:
        _die(str(exc))
    except ValueError as exc:  # pydantic validation of the ad-hoc sink
        _die(f"sink {sink}: {exc}")


def _report_table(report: ExportReport, cursor_note: str = "") -> Table:
    t = Table(box=box.SIMPLE, show_header=False)
    t.add_column("", style="bold")
    t.add_column("")
    rows = [
        ("sink", report.sink),
        ("ledger", report.origin),
        ("records read", str(report.records)),
        ("events delivered", str(report.events)),
        ("records skipped (filter)", str(report.skipped)),
        ("dead letters", str(report.dead_letters)),
        ("retries", str(report.retries)),
        ("cursor", f"{report.start_seq} → {report.last_seq}{cursor_note}"),
        ("lag", f"{report.lag} entries"),
        ("time", f"{report.seconds:.2f}s"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    return t


@app.command()
def run(
    sink: Annotated[str, typer.Option("--sink", "-s", help="The sink's name (from the sinks file, or defined by --type …).")],
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    config: Config = None,
    once: Annotated[
        bool, typer.Option("--once/--follow", help="Export what is there and exit (default), or keep following the ledger.")
    ] = True,
    type_: Annotated[str | None, typer.Option("--type", help="Ad-hoc sink: jsonl, hec, syslog, otel or webhook.")] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="Ad-hoc sink: URL (hec, webhook, otel) or udp|tcp|tls://host:port.")
    ] = None,
    path: Annotated[Path | None, typer.Option("--path", help="Ad-hoc jsonl sink: the file to append to.")] = None,
    format_: Annotated[str | None, typer.Option("--format", help="Ad-hoc sink: native, ocsf or cef.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=100_000, help="Records per batch.")] = 500,
    give_up_after: Annotated[
        float, typer.Option("--give-up-after", min=0, help="--once: stop retrying an unreachable sink after this many seconds.")
    ] = 120.0,
    poll_interval: Annotated[
        float, typer.Option("--poll-interval", min=0.05, help="--follow: seconds between looks at the ledger.")
    ] = 1.0,
    json_out: JsonOut = False,
) -> None:
    """Deliver the ledger's new entries to a sink: OCSF / native JSON to a JSONL file or Splunk HEC,
    CEF over syslog (UDP/TCP/TLS), OpenTelemetry spans, SOAR webhooks.

    The sink's cursor (last delivered sequence number) lives in the ledger's database: a re-run, a
    restart or a SIEM outage resumes where delivery stopped — nothing lost, nothing reordered;
    receivers may see an event twice after a failure and de-duplicate on its uid.
    """
    adhoc = {"type": type_, "endpoint": endpoint, "path": str(path) if path else None, "format": format_}
    cfg = _sink_config(sink, config, adhoc)
    try:
        target = build_sink(cfg)
    except ExportConfigError as exc:
        _die(str(exc))
    except ImportError as exc:
        _die(str(exc))
    ledger = _open(db, origin)
    retry = RetryPolicy(give_up_after=give_up_after if once else None)
    exporter = Exporter(ledger, target, batch_size=batch_size, retry=retry)
    try:
        if once:
            _run_once(exporter, json_out)
        else:
            _follow(exporter, poll_interval, json_out)
    finally:
        exporter.close()
        ledger.close()


def _run_once(exporter: Exporter, json_out: bool) -> None:
    with Progress(
        TextColumn(f"exporting to {escape(exporter.sink.name)}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
        disable=json_out,
    ) as bar:
        task = bar.add_task("export", total=None)
        try:
            report = exporter.run_once(progress=lambda done, total: bar.update(task, completed=done, total=total))
        except ExportFailed as exc:
            report = exc.report
            report.error = str(exc)
    if json_out:
        print_json(report.as_dict())
    else:
        console.print(_report_table(report))
        for d in report.dead[:10]:
            err_console.print(Text(f"dead letter {d['uid']}: {d['reason']}", style="yellow"))
        if report.error:
            err_console.print(Text("FAILED: ", style="bold red") + Text(report.error))
        elif report.dead_letters:
            err_console.print(
                Text(
                    f"{report.dead_letters} events were rejected by the sink (see: fiveplane export dead-letters)", style="yellow"
                )
            )
    raise typer.Exit(0 if report.ok else EXIT_FAILED)


def _follow(exporter: Exporter, poll_interval: float, json_out: bool) -> None:
    def on_batch(report: ExportReport) -> None:
        if json_out:
            print_json(report.as_dict())
        else:
            console.print(
                f"{report.sink}: {report.events} events delivered up to #{report.last_seq}"
                + (f", {report.dead_letters} dead letters" if report.dead_letters else "")
            )

    def stop(*_: object) -> None:
        exporter.stop()

    old = signal.signal(signal.SIGTERM, stop)
    if not json_out:
        err_console.print(Text(f"following the ledger into {exporter.sink.describe()} (Ctrl-C to stop)", style="dim"))
    try:
        exporter.follow(poll_interval=poll_interval, on_batch=on_batch)
    except KeyboardInterrupt:
        exporter.stop()
    finally:
        signal.signal(signal.SIGTERM, old)
    state = exporter.cursor()
    raise typer.Exit(EXIT_FAILED if state.last_error or state.dead_letters else 0)


@app.command()
def status(
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    config: Config = None,
    json_out: JsonOut = False,
) -> None:
    """Every sink's cursor, lag behind the ledger, dead letters and last error.

    Exit 1 when a sink has dead letters or its last attempt failed (for monitoring), else 0.
    """
    try:
        cfg = load_export_config(config)
    except ExportConfigError as exc:
        _die(str(exc))
    ledger = _open(db, origin)
    try:
        size = ledger.size()
        store = ExportStore(ledger.store.url.render_as_string(hide_password=False))
        try:
            cursors = {c.sink: c for c in store.cursors() if c.origin == ledger.origin}
        finally:
            store.dispose()
    finally:
        ledger.close()
    rows: list[dict[str, Any]] = []
    names = list(dict.fromkeys([*(s.name for s in cfg.sinks), *cursors]))
    types = {s.name: s.type for s in cfg.sinks}
    for name in names:
        c = cursors.get(name)
        rows.append(
            {
                "sink": name,
                "type": (c.sink_type if c else "") or types.get(name, ""),
                "cursor": c.last_seq if c else -1,
                "ledger_size": size,
                "lag": size - 1 - (c.last_seq if c else -1),
                "delivered": c.delivered if c else 0,
                "dead_letters": c.dead_letters if c else 0,
                "failures": c.failures if c else 0,
                "last_error": c.last_error if c else None,
                "last_success_at": c.last_success_at.isoformat() if c and c.last_success_at else None,
                "lease_owner": c.lease_owner if c else None,
                "configured": name in types,
            }
        )
    bad = any(r["dead_letters"] or r["last_error"] for r in rows)
    if json_out:
        print_json({"origin": ledger.origin, "ledger_size": size, "sinks": rows})
        raise typer.Exit(EXIT_FAILED if bad else 0)
    if not rows:
        console.print(f"no sinks yet for ledger {ledger.origin} ({size} entries): fiveplane export run --sink NAME …")
        raise typer.Exit(0)
    t = Table(title=f"export status · {ledger.origin} · {size} entries", box=box.SIMPLE_HEAD)
    for col in ("sink", "type", "cursor", "lag", "delivered", "dead letters", "last success", "last error"):
        t.add_column(col, overflow="fold")
    for r in rows:
        lag_style = "green" if r["lag"] == 0 else "yellow"
        t.add_row(
            r["sink"],
            r["type"],
            str(r["cursor"]),
            Text(str(r["lag"]), style=lag_style),
            str(r["delivered"]),
            Text(str(r["dead_letters"]), style="red" if r["dead_letters"] else ""),
            (r["last_success_at"] or "never")[:19],
            Text(r["last_error"] or "", style="red"),
        )
    console.print(t)
    raise typer.Exit(EXIT_FAILED if bad else 0)


@app.command("dead-letters")
def dead_letters(
    sink: Annotated[str | None, typer.Option("--sink", "-s", help="Only this sink.")] = None,
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many.")] = 100,
    json_out: JsonOut = False,
) -> None:
    """Events a sink rejected for good (with the reason and the event as it was sent)."""
    ledger = _open(db, origin)
    try:
        store = ExportStore(ledger.store.url.render_as_string(hide_password=False))
        try:
            items = [d for d in store.dead_letters(sink, limit=limit) if d.origin == ledger.origin]
        finally:
            store.dispose()
    finally:
        ledger.close()
    if json_out:
        for d in items:
            print_json(
                {
                    "id": d.id,
                    "sink": d.sink,
                    "seq": d.seq,
                    "uid": d.event_uid,
                    "reason": d.reason,
                    "created_at": d.created_at.isoformat(),
                    "event": _maybe_json(d.event),
                }
            )
        return
    if not items:
        console.print("no dead letters")
        return
    t = Table(box=box.SIMPLE_HEAD)
    for col in ("sink", "seq", "uid", "reason", "when"):
        t.add_column(col, overflow="fold")
    for d in items:
        t.add_row(d.sink, str(d.seq), d.event_uid, d.reason, d.created_at.isoformat()[:19])
    console.print(t)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
