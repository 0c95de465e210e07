"""``fiveplane audit …``: verify, explore, prove and witness the evidence ledger.

Exit codes: 0 all holds; 1 verification failed (the first bad sequence number and what is wrong are
printed), or a witness refused to cosign; 2 bad input (no such database, unreadable key or receipt,
bad option).
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from .._ledger._errors import LedgerError
from .._ledger._note import (
    Checkpoint,
    NoteError,
    NoteVerifier,
    generate_signing_key,
    load_signing_key,
    load_verifier,
    verify_receipt,
)
from .._ledger._reconstruct import ActionStory, TimelineFilter
from .._ledger._records import decode_envelope
from .._ledger._sink import DEFAULT_URL, Ledger, open_ledger
from .._ledger._verify import VerifyReport
from .._ledger._witness import (
    CosignatureVerifier,
    generate_witness_key,
    load_cosignature_verifier,
    load_cosigner,
    witness_checkpoint,
)
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, console, die, err_console, print_json

app = typer.Typer(help="Verify, explore and prove the evidence ledger.", no_args_is_help=True)

Db = Annotated[
    str,
    typer.Option(
        "--db",
        envvar=["FIVEPLANE_LEDGER_URL", "FIVEPLANE_DATABASE_URL"],
        help="Ledger database URL (sqlite:///… or postgresql+psycopg://…).",
    ),
]
Origin = Annotated[str | None, typer.Option("--origin", help="Which ledger, when the database holds several (its origin).")]
Keys = Annotated[
    list[str] | None,
    typer.Option(
        "--key",
        "-k",
        help="Trusted verifier key (name+id+base64) or a file holding one; repeatable. Default: the keys recorded in the database (self-asserted).",
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
SigningKey = Annotated[
    str | None,
    typer.Option(
        "--signing-key",
        help="The log's signer key file: sign a checkpoint over what this command appends (without it the new entries stay uncovered and `verify --key` fails on them).",
    ),
]

_VERDICT_STYLE = {
    "allow": "green",
    "modify": "cyan",
    "narrow": "cyan",
    "defer": "yellow",
    "require_approval": "yellow",
    "block": "bold red",
}
_STATUS_STYLE = {
    "success": "green",
    "error": "red",
    "blocked": "red",
    "unknown": "bold red",
    "approval_pending": "yellow",
    "deferred": "yellow",
}


def _die(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """``die`` with the message escaped: it may hold user data (ids, paths, URLs) with ``[``."""
    die(escape(message), code)


def _open(db: str, origin: str | None, *, key: str | None = None) -> Ledger:
    try:
        signer = load_signing_key(key) if key else None
        return open_ledger(db, key=signer, origin=origin, create=False, checkpoint_interval=None, checkpoint_every=None)
    except (FileNotFoundError, LookupError, LedgerError, NoteError) as exc:
        _die(str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver error opening the database is bad input here
        _die(f"cannot open ledger {db}: {type(exc).__name__}: {exc}")


def _trusted(ledger: Ledger, keys: list[str] | None) -> tuple[list[NoteVerifier], bool]:
    """The verifier keys to trust, and whether they came from the user (not the database)."""
    if keys:
        try:
            return [load_verifier(k) for k in keys], True
        except NoteError as exc:
            _die(str(exc))
    return ledger.verifiers(), False


def _fail(message: str) -> NoReturn:
    err_console.print(Text("FAILED: ", style="bold red") + Text(message))
    raise typer.Exit(EXIT_FAILED)


def _witnesses(keys: list[str] | None) -> list[CosignatureVerifier]:
    try:
        return [load_cosignature_verifier(k) for k in keys or []]
    except NoteError as exc:
        _die(str(exc))


def _span(start: int, count: int) -> str:
    return f"entry {start}" if count == 1 else f"entries {start}–{start + count - 1}"


def _verify_table(report: VerifyReport) -> Table:
    table = Table(show_header=False, box=None)
    table.add_row("ledger", Text(f"{report.origin}  ({report.url})"))
    table.add_row("entries", Text(f"{report.entries} (state row: {report.size})"))
    table.add_row("root", Text(report.root))
    table.add_row("payloads", Text(f"{report.payloads_checked} verified, {report.payloads_erased} erased"))
    table.add_row("tree nodes", Text(f"{report.nodes_checked} verified"))
    latest = ""
    if report.latest_checkpoint is not None:
        number = f" #{report.latest_checkpoint_number}" if report.latest_checkpoint_number is not None else ""
        latest = f" (latest{number} at size {report.latest_checkpoint})"
    table.add_row("checkpoints", Text(f"{report.checkpoints_checked} verified{latest}"))
    if report.keys:
        covered = Text(f"entries 0–{report.signed_size - 1} under a trusted signature" if report.signed_size else "nothing")
        if report.uncovered:
            style = "bold red" if report.require_signed and any(p.check == "coverage" for p in report.problems) else "yellow"
            names = ", ".join(f"{e['seq']} {e['kind']}" for e in report.uncovered_entries[:5])
            more = ", …" if report.uncovered > 5 else ""
            covered += Text(f";  {_span(report.signed_size, report.uncovered)} UNCOVERED ({names}{more})", style=style)
        table.add_row("signed", covered)
    else:
        table.add_row("signed", Text("not checked: no verifier key (pass --key)", style="yellow"))
    if report.against is not None:
        a = report.against
        table.add_row(
            "against", Text(f"checkpoint at size {a['size']}: " + ("consistent" if a.get("root_matches") else "NOT consistent"))
        )
    if report.witness is not None:
        w = report.witness
        by = ", ".join(f"{c['key'].split('+')[0]} at {c['time']}" for c in w["cosigned_by"]) or "nobody trusted"
        ok = len(w["cosigned_by"]) >= w["required"]
        table.add_row("witnessed", Text(f"{w['where']}: cosigned by {by}", style="" if ok else "bold red"))
    if report.format is not None and report.format != 1:
        table.add_row("format", Text(f"{report.format} (unknown)", style="bold red"))
    table.add_row("time", Text(f"{report.elapsed_s:.2f}s"))
    return table


@app.command()
def verify(
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    key: Keys = None,
    against: Annotated[
        Path | None, typer.Option("--against", help="A signed checkpoint saved earlier: prove the ledger is consistent with it.")
    ] = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-key",
            "-w",
            help="A witness's verifier key (or a file holding it): the --against checkpoint, or else the latest stored one, must carry its valid cosignature. Repeatable.",
        ),
    ] = None,
    witnesses: Annotated[
        int, typer.Option("--witnesses", min=1, help="How many of the --witness-key witnesses must have cosigned.")
    ] = 1,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            min=0.0,
            help="Seconds: with --key, uncovered entries recorded this recently only warn (a live ledger signs its tail within its checkpoint interval). Entries claim their own time.",
        ),
    ] = 0.0,
    json_out: JsonOut = False,
) -> None:
    """Full fsck: recompute every leaf from its envelope, every node and the root from the leaves,
    check payload digests, the state row, every checkpoint's signature and sequence number, and
    that every entry lies under a signed checkpoint.

    With --key (your own copy of the log's verifier key) an entry no checkpoint signed by that key
    covers, a ledger without such a checkpoint, a missing checkpoint and an unknown format FAIL;
    without --key they are warnings. With --against, also prove consistency with a checkpoint kept
    elsewhere (catches a restored older copy); with --witness-key, require a witness's cosignature.
    Exit 0 only if everything holds; else exit 1 naming the first bad sequence number.
    """
    note = None
    if against is not None:
        try:
            note = against.read_text()
        except OSError as exc:
            _die(f"{against}: {exc.strerror or exc}")
    wkeys = _witnesses(witness_key)
    if witnesses > max(1, len(wkeys)) and wkeys:
        _die(f"--witnesses {witnesses} but only {len(wkeys)} --witness-key given")
    ledger = _open(db, origin)
    try:
        trusted, explicit = _trusted(ledger, key)
        if not json_out and not explicit and trusted:
            err_console.print(
                Text(
                    "note: trusting the verifier key(s) recorded in the database; pass --key to check against your own copy",
                    style="yellow",
                )
            )
        with Progress(
            TextColumn("verifying"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
            disable=json_out,
        ) as bar:
            task = bar.add_task("verify", total=None)
            report = ledger.verify(
                keys=trusted,
                against=note,
                progress=lambda done, total: bar.update(task, completed=done, total=total),
                require_signed=explicit,
                witness_keys=wkeys,
                witnesses_required=witnesses,
                grace=grace,
            )
    finally:
        ledger.close()
    if json_out:
        print_json({**report.model_dump(mode="json"), "first_bad_seq": report.first_bad_seq})
        raise typer.Exit(0 if report.ok else EXIT_FAILED)
    console.print(_verify_table(report))
    for w in report.warnings:
        err_console.print(Text(f"  warning   {w.check}: ", style="yellow") + Text(w.detail))
    if report.ok:
        console.print(
            Text("OK", style="bold green")
            + Text(f": the ledger verifies ({report.entries} entries" + (", with warnings)" if report.warnings else ")"))
        )
        return
    for p in report.problems[:20]:
        err_console.print(Text(f"  {p.check:<10} ", style="red") + Text(str(p)))
    more = len(report.problems) - 20 + report.truncated_problems
    if more > 0:
        err_console.print(Text(f"  … and {more} more"))
    first = report.first_problem
    where = f"first bad sequence number {report.first_bad_seq}: " if report.first_bad_seq is not None else ""
    _fail(f"{where}{first.detail if first else 'unknown problem'}")


@app.command()
def show(
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    session: Annotated[str | None, typer.Option("--session", help="Only this session.")] = None,
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent.")] = None,
    tool: Annotated[str | None, typer.Option("--tool", help="Only this tool.")] = None,
    verdict: Annotated[str | None, typer.Option("--verdict", help="Only decisions with this verdict.")] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only entries of this kind (intent, decision, enforcement, outcome, erasure, …).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show the last N matching entries.")] = 50,
    json_out: JsonOut = False,
) -> None:
    """The timeline of evidence entries (latest N), with filters."""
    ledger = _open(db, origin)
    try:
        rows = ledger.timeline(TimelineFilter(session=session, agent=agent, tool=tool, verdict=verdict, kind=kind), limit=limit)
    finally:
        ledger.close()
    if json_out:
        for r in rows:
            print_json(r.model_dump(mode="json", exclude={"payload"}))
        return
    table = Table(title=Text(f"evidence: {ledger.origin}"), box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True, min_width=max([3] + [len(str(r.seq)) for r in rows]))
    table.add_column("time", no_wrap=True, min_width=12)
    table.add_column("kind", no_wrap=True, min_width=8)
    table.add_column("session", overflow="ellipsis", no_wrap=True)
    table.add_column("agent", overflow="ellipsis", no_wrap=True)
    table.add_column("tool / point", overflow="ellipsis", no_wrap=True, min_width=12)
    table.add_column("result", no_wrap=True, min_width=8)
    table.add_column("action", no_wrap=True, min_width=8)
    for r in rows:
        m = r.meta
        state = m.get("verdict") or m.get("status") or (f"erased {len(m.get('erased', []))}" if r.kind == "erasure" else "")
        style = _VERDICT_STYLE.get(state) or _STATUS_STYLE.get(state, "")
        table.add_row(
            Text(str(r.seq)),
            Text(r.time[11:23]),
            Text(r.kind),
            Text(r.session_id or ""),
            Text(str(m.get("agent", ""))),
            Text(str(m.get("tool", m.get("point", "")))),
            Text(str(state), style=style),
            Text((r.action_id or "")[:8]),
        )
    console.print(table)
    if not rows:
        console.print(Text("no matching entries", style="dim"))


def _print_story(story: ActionStory, *, indent: str = "") -> None:
    what = story.what
    head = Text(f"{indent}action {story.action_id}", style="bold")
    if story.session_id:
        head += Text(f"  session {story.session_id}", style="dim")
    console.print(head)
    who = " → ".join(
        f"{p.get('kind')}:{p.get('id')}" + (f" ({', '.join(p.get('roles') or [])})" if p.get("roles") else "") for p in story.who
    )
    console.print(Text(f"{indent}  who:      ") + Text(who or "?"))
    target = " ".join(
        str(x) for x in (what.get("point"), what.get("tool"), f"[{what.get('class')}]" if what.get("class") else None) if x
    )
    console.print(Text(f"{indent}  what:     ") + Text(target or "?"))
    if what.get("arguments"):
        console.print(Text(f"{indent}  args:     ") + Text(json.dumps(what["arguments"], ensure_ascii=False)[:400]))
    if what.get("content") is not None:
        console.print(Text(f"{indent}  content:  ") + Text(json.dumps(what["content"], ensure_ascii=False)[:400]))
    if what.get("content_digest"):
        console.print(Text(f"{indent}  content:  ") + Text(f"(stored as digest) {what['content_digest']}", style="dim"))
    why = story.why
    console.print(
        Text(f"{indent}  why:      ")
        + Text(str(why.get("intent") or "?"))
        + Text(f"  (purpose: {why.get('purpose')})" if why.get("purpose") else "", style="dim")
    )
    dec = story.decision
    if dec:
        v = str(dec.get("verdict"))
        line = Text(f"{indent}  decision: ") + Text(v, style=_VERDICT_STYLE.get(v, ""))
        if dec.get("policy_verdict") != v:
            line += Text(f" (policy said {dec.get('policy_verdict')}, mode {dec.get('mode')})", style="yellow")
        line += Text(f"  rules: {', '.join(dec.get('rule_ids') or []) or '-'}", style="dim")
        console.print(line)
        if dec.get("explanation"):
            console.print(Text(f"{indent}            {dec['explanation']}"))
        console.print(
            Text(f"{indent}            policy {dec.get('policy_version') or ''} {dec.get('policy_hash') or ''}", style="dim")
        )
        for plane, findings in story.planes.items():
            if not findings:
                console.print(Text(f"{indent}    {plane}: (findings erased)", style="dim"))
            for f in findings:
                console.print(Text(f"{indent}    {plane}: ") + Text(f"[{f.get('severity')}] {f.get('code')}: {f.get('message')}"))
    if story.obligations:
        console.print(
            Text(f"{indent}  obligations: ") + Text(", ".join(f"{o.get('kind')}@{o.get('plane')}" for o in story.obligations))
        )
    if story.token:
        console.print(Text(f"{indent}  token:    ") + Text(json.dumps(story.token, ensure_ascii=False)))
    for out in story.outcomes:
        status = str(out.get("status"))
        line = Text(f"{indent}  outcome:  ") + Text(status, style=_STATUS_STYLE.get(status, ""))
        if out.get("result_digest"):
            line += Text(f"  result {out['result_digest']}", style="dim")
        if out.get("error"):
            line += Text(f"  {out['error']}", style="red")
        if out.get("duration_ms") is not None:
            line += Text(f"  {out['duration_ms']:.1f} ms", style="dim")
        console.print(line)
    if not story.outcomes and (story.what.get("point") == "tool_call"):
        console.print(
            Text(f"{indent}  outcome:  ")
            + Text("none recorded (still running, or the process died: `fiveplane audit recover`)", style="yellow")
        )
    if story.erased:
        console.print(Text(f"{indent}  note: some payloads were erased; identifiers and verdicts remain", style="yellow"))
    if story.tampered:
        console.print(
            Text(
                f"{indent}  WARNING: payloads of entries {story.tampered} do not match their envelopes (ignored)",
                style="bold red",
            )
        )
    console.print(Text(f"{indent}  entries:  " + ", ".join(f"{r.seq} {r.kind}" for r in story.records), style="dim"))
    for child in story.results:
        console.print(Text(f"{indent}  result:", style="bold"))
        _print_story(child, indent=indent + "    ")


@app.command()
def reconstruct(
    action_id: Annotated[str, typer.Argument(help="The action id (as shown by `audit show`; a unique prefix is enough).")],
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    json_out: JsonOut = False,
) -> None:
    """The story of one action: who, what, why, the decision per plane, token and outcome."""
    ledger = _open(db, origin)
    try:
        full = action_id
        if len(action_id) < 32:
            ids = {r.action_id for r in ledger.timeline(TimelineFilter(action=action_id), limit=None) if r.action_id}
            if len(ids) > 1:
                _die(f"action id prefix {action_id!r} is ambiguous ({len(ids)} actions)")
            full = ids.pop() if ids else action_id
        story = ledger.reconstruct(full)
    finally:
        ledger.close()
    if story is None:
        _die(f"no evidence for action {action_id!r}")
    if json_out:
        print_json(story.model_dump(mode="json"))
        return
    _print_story(story)


@app.command()
def receipt(
    seq: Annotated[int, typer.Argument(help="Entry sequence number.", min=0)],
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    signing_key: Annotated[
        str | None,
        typer.Option("--signing-key", help="Signer key file, to sign a fresh checkpoint if none covers the entry yet."),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the receipt here (default: stdout).")] = None,
) -> None:
    """Print a C2SP tlog-proof receipt for one entry (index, inclusion proof, signed checkpoint)."""
    ledger = _open(db, origin, key=signing_key)
    try:
        text = ledger.receipt(seq).encode()
    except LedgerError as exc:
        _die(str(exc))
    finally:
        ledger.close()
    if out is not None:
        out.write_text(text)
        err_console.print(Text(f"wrote {out}"))
    else:
        console.file.write(text)


@app.command("verify-receipt")
def verify_receipt_cmd(
    file: Annotated[Path, typer.Argument(help="A .tlog-proof receipt.")],
    key: Annotated[
        list[str], typer.Option("--key", "-k", help="Trusted verifier key of the log (or a file holding it); repeatable.")
    ],
    origin: Annotated[str | None, typer.Option("--origin", help="Require this log origin.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Verify a receipt offline: the checkpoint signature and the entry's inclusion proof."""
    try:
        text = file.read_text()
        keys = [load_verifier(k) for k in key]
    except OSError as exc:
        _die(f"{file}: {exc.strerror or exc}")
    except NoteError as exc:
        _die(str(exc))
    try:
        check = verify_receipt(text, keys, origin=origin)
    except NoteError as exc:
        if json_out:
            print_json({"ok": False, "error": str(exc)})
            raise typer.Exit(EXIT_FAILED) from None
        _fail(str(exc))
    env: dict[str, Any] = {}
    if check.entry is not None:
        try:
            env = decode_envelope(check.entry)
        except ValueError:
            env = {}
    if json_out:
        print_json(
            {
                "ok": True,
                "origin": check.checkpoint.origin,
                "index": check.index,
                "tree_size": check.checkpoint.size,
                "root": check.checkpoint.root.hex(),
                "leaf_hash": check.leaf_hash.hex(),
                "signed_by": list(check.signed_by),
                "entry": env,
            }
        )
        return
    console.print(
        Text("OK", style="bold green")
        + Text(f": entry {check.index} is in log {check.checkpoint.origin} at tree size {check.checkpoint.size}")
    )
    console.print(Text(f"  signed by {', '.join(check.signed_by)}", style="dim"))
    if env:
        meta = env.get("meta", {})
        console.print(Text(f"  {env.get('kind')} of action {env.get('action_id', '-')} at {env.get('time')}"))
        console.print(Text("  " + json.dumps(meta, ensure_ascii=False, sort_keys=True)[:400], style="dim"))
        if env.get("payload"):
            console.print(Text(f"  payload digest {env['payload'].get('digest')} (salted)", style="dim"))


@app.command()
def checkpoint(
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    sign: Annotated[
        bool, typer.Option("--sign", help="Sign a new checkpoint of the current tree first (needs --signing-key).")
    ] = False,
    signing_key: Annotated[str | None, typer.Option("--signing-key", help="Signer key file.")] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key", "-k", help="Check the checkpoint's signature with this verifier key before printing it (exit 1 if it fails)."
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Also write it to this file (keep it off the box).")] = None,
    json_out: JsonOut = False,
) -> None:
    """Print the latest signed checkpoint (a C2SP signed note, with any witness cosignatures
    imported for it). Save it elsewhere; verify --against it later, or have a witness cosign it."""
    if sign and not signing_key:
        _die("--sign needs --signing-key")
    trusted: list[NoteVerifier] = []
    if key:
        try:
            trusted = [load_verifier(k) for k in key]
        except NoteError as exc:
            _die(str(exc))
    ledger = _open(db, origin, key=signing_key)
    try:
        cp: Checkpoint | None = ledger.checkpoint() if sign else ledger.latest_checkpoint()
    except LedgerError as exc:
        _die(str(exc))
    finally:
        ledger.close()
    if cp is None or cp.note is None:
        _die("no signed checkpoint yet (sign one: fiveplane audit checkpoint --sign --signing-key KEYFILE)", EXIT_FAILED)
    if trusted:
        try:
            Checkpoint.from_note(cp.note, trusted, origin=ledger.origin)
        except NoteError as exc:
            _fail(f"the stored checkpoint at size {cp.size} does not verify: {exc}")
    if out is not None:
        _write(out, cp.note)
    if json_out:
        print_json({"origin": cp.origin, "size": cp.size, "number": cp.number, "root": cp.root.hex(), "note": cp.note})
        return
    console.file.write(cp.note)


def _write(path: Path, text: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as exc:
        _die(f"{path}: {exc.strerror or exc}")


@app.command()
def cosign(
    checkpoint_file: Annotated[
        Path, typer.Option("--checkpoint", "-c", help="The log's signed checkpoint (from `audit checkpoint --out`).")
    ],
    key: Annotated[str, typer.Option("--key", "-k", help="The witness's signing key file (see `audit keygen --witness`).")],
    log_key: Annotated[
        list[str],
        typer.Option(
            "--log-key", help="The log's verifier key (or a file holding it): the checkpoint must be signed by it. Repeatable."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Write the cosigned checkpoint here.")],
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="The witness's state file: the latest checkpoint it cosigned for this log. Rollback and forks are refused, growth needs a consistency proof (--db). Created on first use, replaced after each cosignature.",
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="The ledger, to compute the consistency proof from the state's checkpoint (checked, not trusted)."
        ),
    ] = None,
    origin: Origin = None,
    json_out: JsonOut = False,
) -> None:
    """Witness a checkpoint: check the log's signature (and, with --state, consistency with the last
    checkpoint this witness cosigned), then add a C2SP cosignature/v1 line (Ed25519, timestamped).

    Run it where the database's operators cannot reach the witness key; store the result with
    `audit import-cosignature` and check it with `audit verify --witness-key`.
    """
    try:
        note = checkpoint_file.read_text()
        cosigner = load_cosigner(key)
        log_keys = [load_verifier(k) for k in log_key]
    except OSError as exc:
        _die(f"{checkpoint_file}: {exc.strerror or exc}")
    except NoteError as exc:
        _die(str(exc))
    ledger = _open(db, origin) if db else None
    try:
        result = witness_checkpoint(
            note, cosigner, log_keys, state=state, proof=ledger.consistency_proof if ledger is not None else None
        )
    except NoteError as exc:
        if json_out:
            print_json({"ok": False, "error": str(exc)})
            raise typer.Exit(EXIT_FAILED) from None
        _fail(str(exc))
    except (LedgerError, LookupError) as exc:
        _die(f"cannot compute the consistency proof from {db}: {exc}")
    finally:
        if ledger is not None:
            ledger.close()
    _write(out, result.note)
    if json_out:
        print_json(
            {
                "ok": True,
                "origin": result.checkpoint.origin,
                "size": result.checkpoint.size,
                "witness": cosigner.verifier_key(),
                "time": result.timestamp,
                "previous_size": result.previous_size,
                "consistency_proof": result.consistency_proof,
                "out": str(out),
            }
        )
        return
    since = (
        f"consistent with size {result.previous_size} ({result.consistency_proof} proof hashes)"
        if result.previous_size is not None
        else "first checkpoint this witness cosigns for the log"
        if state is not None
        else "no --state: rollback not checked"
    )
    console.print(
        Text("cosigned", style="bold green")
        + Text(f": {result.checkpoint.origin} at size {result.checkpoint.size} by {cosigner.name}; {since}; wrote {out}")
    )
    if state is None:
        err_console.print(Text("note: without --state the witness cannot refuse a rollback or a fork", style="yellow"))


@app.command("import-cosignature")
def import_cosignature(
    file: Annotated[Path, typer.Argument(help="A checkpoint as cosigned by witnesses (from `audit cosign`).")],
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    witness_key: Annotated[
        list[str] | None,
        typer.Option(
            "--witness-key", "-w", help="Only keep valid cosignatures of these witnesses (and require one). Repeatable."
        ),
    ] = None,
) -> None:
    """Store the witness cosignatures of a cosigned checkpoint next to that checkpoint in the ledger:
    receipts and `audit checkpoint` then carry them, and `audit verify --witness-key` finds them."""
    try:
        note = file.read_text()
    except OSError as exc:
        _die(f"{file}: {exc.strerror or exc}")
    wkeys = _witnesses(witness_key) if witness_key else None
    ledger = _open(db, origin)
    try:
        added = ledger.add_cosignatures(note, witnesses=wkeys)
    except (LedgerError, NoteError) as exc:
        _die(str(exc))
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        _die(f"cannot store the cosignatures in {ledger.url}: {type(cause).__name__}: {str(cause).strip()}")
    finally:
        ledger.close()
    console.print(Text(f"stored {added} new cosignature(s)"))


@app.command()
def keygen(
    name: Annotated[str, typer.Argument(help="Key name; use the ledger's origin, e.g. acme.example/agents.")],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Signer key file to create (mode 0600); the verifier key goes to FILE.pub.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key file.")] = False,
    witness: Annotated[
        bool, typer.Option("--witness", help="A witness (cosigner) key: C2SP cosignature/v1, key type 0x04.")
    ] = False,
) -> None:
    """Generate an Ed25519 checkpoint signing key (C2SP note format), or with --witness a witness's
    cosigning key. Keep either away from the database."""
    try:
        verifier: NoteVerifier | CosignatureVerifier = (
            generate_witness_key(out, name, overwrite=force) if witness else generate_signing_key(out, name, overwrite=force)
        )
    except FileExistsError:
        _die(f"{out} exists (use --force to overwrite)")
    except (NoteError, OSError) as exc:
        _die(str(exc))
    err_console.print(Text(f"wrote {out} (secret) and {out}.pub"))
    console.print(Text(str(verifier)))


@app.command()
def erase(
    seqs: Annotated[list[int] | None, typer.Argument(help="Entries whose payloads to erase.")] = None,
    action: Annotated[str | None, typer.Option("--action", help="Erase every payload of this action (and its results).")] = None,
    reason: Annotated[str, typer.Option("--reason", help="Why (kept in the erasure record's own payload).")] = "",
    requested_by: Annotated[str | None, typer.Option("--requested-by", help="Who asked.")] = None,
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    signing_key: SigningKey = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Erase payloads (data-protection requests). Envelopes stay, so every proof still verifies; the
    erasure is recorded as its own entry."""
    if not seqs and not action:
        _die("give entry numbers or --action ACTION_ID")
    if not reason:
        _die("--reason is required")
    if not yes and not typer.confirm(
        f"Erase payloads of {'action ' + action if action else f'entries {seqs}'}? This cannot be undone"
    ):
        raise typer.Exit(EXIT_BAD_INPUT)
    ledger = _open(db, origin, key=signing_key)
    try:
        done = (
            ledger.erase_action(action, reason=reason, requested_by=requested_by)
            if action
            else ledger.erase(seqs or [], reason=reason, requested_by=requested_by)
        )
    except LedgerError as exc:
        _die(str(exc))
    finally:
        ledger.close()
    console.print(Text(f"erased payloads of entries {', '.join(map(str, done))}"))
    if not signing_key:
        err_console.print(
            Text(
                "note: no --signing-key: the erasure entry is not covered by a signed checkpoint (`audit verify --key` fails on it until a key holder signs one)",
                style="yellow",
            )
        )


@app.command()
def recover(
    db: Db = DEFAULT_URL,
    origin: Origin = None,
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than", help="For writers on other hosts: seconds after which an action without outcome counts as abandoned."
        ),
    ] = None,
    signing_key: SigningKey = None,
) -> None:
    """Record outcome `unknown` for actions whose process died mid-call (allowed, never finished)."""
    ledger = _open(db, origin, key=signing_key)
    try:
        marked = ledger.recover(older_than=timedelta(seconds=older_than) if older_than is not None else None)
    finally:
        ledger.close()
    console.print(
        Text(
            f"marked {len(marked)} action(s) with outcome unknown" + (": " + ", ".join(m[:12] for m in marked) if marked else "")
        )
    )


__all__ = ["app"]
