"""The ``segments`` command: a thin shell over the service.

Each command parses its arguments, calls one service function and prints the result (a table,
or JSON with ``--json``).  A user error prints one message and exits with status 2, with no
traceback, and writes nothing (the service's transactions see to that).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, BinaryIO

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy.exc import ArgumentError, DBAPIError

from . import service
from .rules import jsontext
from .service import RuleInput, SegmentsError, UnitOfWork
from .service.settings import BROKER_URL_ENV, Settings
from .service.snapshots import MAX_VALUES as MAX_SNAPSHOT_VALUES
from .storage import EventCause, make_engine, make_session_factory
from .storage.schema import current_revision, head_revision, migrate
from .tasks import create_celery_app, dispatcher_from_env

USER_ERROR = 2


# --------------------------------------------------------------------------- the runtime


@dataclass
class Runtime:
    """What every command needs: the database, the clock, and how output is shown."""

    db: str | None
    as_json: bool
    fixed_now: float | None

    def now(self) -> float:
        return self.fixed_now if self.fixed_now is not None else time.time()

    @cached_property
    def engine(self):
        """The engine for ``--db``, once it connects (a bad URL or an unreachable database is a
        user error, not a traceback)."""
        try:
            engine = make_engine(self.db)
        except ArgumentError as error:
            raise SegmentsError(f"--db: not a usable database URL: {error}") from None
        try:
            engine.connect().close()
        except DBAPIError as error:
            engine.dispose()
            url = engine.url.render_as_string(hide_password=True)
            raise SegmentsError(f"cannot open the database {url}: {str(error.orig).strip()}") from None
        return engine

    def close(self) -> None:
        """Close the database connections (when the command ends)."""
        if "engine" in self.__dict__:
            self.__dict__.pop("engine").dispose()

    def uow(self, *, require_schema: bool = True) -> UnitOfWork:
        if require_schema and current_revision(self.engine) != head_revision():
            raise SegmentsError("the database is not initialised (or is out of date): run `segments init` first")
        factory = make_session_factory(self.engine)
        return UnitOfWork(factory, self.dispatcher(factory))

    @property
    def settings(self) -> Settings:
        return replace(Settings.from_env(), database_url=self.engine.url.render_as_string(hide_password=False))

    def dispatcher(self, factory):
        return dispatcher_from_env(factory, clock=self.now, settings=self.settings)

    def celery_app(self):
        if not self.settings.broker_url:
            raise SegmentsError(f"no broker: set {BROKER_URL_ENV} (e.g. redis://127.0.0.1:6379/0)")
        return create_celery_app(self.settings)

    @property
    def console(self) -> Console:
        return Console(highlight=False)

    def emit(self, data: Any, render: Callable[[], None] | None = None) -> None:
        """Print ``data`` as JSON with ``--json``, else as ``render`` shows it."""
        if self.as_json or render is None:
            click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            render()

    @contextmanager
    def progress(self, label: str, total: int | None) -> Iterator[Callable[[int], None]]:
        """A progress bar on a terminal (none with ``--json`` or when piped)."""
        if self.as_json or not sys.stderr.isatty():
            yield lambda advance: None
            return
        with Progress(console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task(label, total=total)
            yield lambda advance: bar.advance(task, advance)


def parse_instant(text: str) -> float:
    """``--now``: epoch seconds, or ISO-8601 with a zone offset."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither epoch seconds nor an ISO-8601 instant") from None
    if instant.tzinfo is None:
        raise click.BadParameter(f"{text!r} has no zone offset (add Z or +HH:MM)")
    return instant.timestamp()


def read_argument(value: str, what: str) -> str | bytes:
    """A document given inline (its text), or as ``@FILE`` (its bytes; ``@-`` for standard input)."""
    if not value.startswith("@"):
        return value
    name = value[1:]
    try:
        return sys.stdin.buffer.read() if name == "-" else Path(name).read_bytes()
    except OSError as error:
        raise SegmentsError(f"cannot read {what} from {name!r}: {error.strerror}") from None


def read_json_argument(value: str, what: str) -> Any:
    """A JSON document given inline, or as ``@FILE`` (``@-`` for standard input), parsed strictly."""
    raw = read_argument(value, what)
    try:
        return jsontext.loads(raw if isinstance(raw, str) else jsontext.decode(raw))
    except jsontext.JSONTextError as error:
        raise SegmentsError(f"{what} is not valid JSON: {error}") from None


def iter_json_lines(stream: BinaryIO, *, max_values: int) -> Iterator[tuple[int, Any]]:
    """(line number, document) for each non-blank line; a bad line names its number.  A line of
    more than ``max_values`` JSON values is refused before it is parsed."""
    for number, line in enumerate(stream, start=1):
        try:
            text = jsontext.decode(line)
            if not text.strip(" \t\r\n"):  # JSON's whitespace only
                continue
            if jsontext.more_values_than(text, max_values):
                raise SegmentsError(f"line {number}: too large: more than {max_values:,} JSON values")
            yield number, jsontext.loads(text)
        except jsontext.JSONTextError as error:
            raise SegmentsError(f"line {number}: not valid JSON ({error})") from None


class SegmentsGroup(click.Group):
    """Turns a user error into its message and exit status 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SegmentsError as error:
            click.echo(f"error: {error}", err=True)
            ctx.exit(USER_ERROR)


pass_runtime = click.make_pass_decorator(Runtime)


@click.group(cls=SegmentsGroup)
@click.option("--db", envvar="SEGMENTS_DATABASE_URL", help="Database URL (default: sqlite:///segments.db).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--now", "now", help="Evaluate at this instant: epoch seconds or ISO-8601 with offset.")
@click.version_option(package_name="contact-segments")
@click.pass_context
def main(ctx: click.Context, db: str | None, as_json: bool, now: str | None) -> None:
    """contact-segments: live contact segments over JSONLogic rules."""
    ctx.obj = Runtime(db=db, as_json=as_json, fixed_now=parse_instant(now) if now else None)
    ctx.call_on_close(ctx.obj.close)


@main.command()
@pass_runtime
def init(rt: Runtime) -> None:
    """Create or upgrade the database schema."""
    migrate(rt.engine)
    rt.emit({"database": rt.engine.url.render_as_string(hide_password=True), "revision": head_revision()},
            lambda: click.echo(f"database ready: {rt.engine.url.render_as_string(hide_password=True)}"))


# --------------------------------------------------------------------------- workspaces


@main.group()
def workspace() -> None:
    """Create and list workspaces."""


@workspace.command("create")
@click.argument("workspace_id")
@click.option("--name", help="Display name (default: the id).")
@click.option("--timezone", default="UTC", show_default=True, help="IANA time zone, e.g. Asia/Kuala_Lumpur.")
@pass_runtime
def workspace_create(rt: Runtime, workspace_id: str, name: str | None, timezone: str) -> None:
    """Create a workspace with its default segments (idempotent)."""
    view = service.create_workspace(rt.uow(), workspace_id, name=name, timezone=timezone, now=rt.now())
    rt.emit(view.to_dict(), lambda: click.echo(f"workspace {view.id} ({view.timezone}): {view.segment_count} segments"))


@workspace.command("list")
@pass_runtime
def workspace_list(rt: Runtime) -> None:
    """List workspaces."""
    views = service.list_workspaces(rt.uow())

    def render() -> None:
        table = Table("id", "name", "time zone", "segments")
        for view in views:
            table.add_row(view.id, view.name, view.timezone, str(view.segment_count))
        rt.console.print(table)

    rt.emit([view.to_dict() for view in views], render)


# --------------------------------------------------------------------------- segments

workspace_option = click.option("-w", "--workspace", "workspace_id", required=True, help="Workspace id.")


def rule_input(rule: str | None, conditions: str | None) -> RuleInput:
    """The rule goes to the rules layer as text (or a file's bytes): it parses it strictly, within
    its limits of size and depth, before anything else reads it."""
    return RuleInput(
        rule=read_argument(rule, "the rule") if rule is not None else None,
        conditions=read_json_argument(conditions, "the conditions") if conditions is not None else None,
    )


def print_segments(rt: Runtime, views: list[service.SegmentView]) -> None:
    table = Table("id", "name", "members", "filters", "default")
    for view in views:
        table.add_row(str(view.id), view.name, f"{view.member_count:,}", str(view.filter_count), "yes" if view.is_default else "")
    rt.console.print(table)


def print_segment(view: service.SegmentView, verb: str) -> None:
    click.echo(f"{verb} segment {view.id} {view.name!r}: {view.member_count:,} members, {view.filter_count} filters")


@main.group()
def segment() -> None:
    """Create, edit, rename, delete, list and inspect segments."""


@segment.command("list")
@workspace_option
@pass_runtime
def segment_list(rt: Runtime, workspace_id: str) -> None:
    """List segments with member counts and filter counts."""
    views = service.list_segments(rt.uow(), workspace_id)
    rt.emit([view.to_dict() for view in views], lambda: print_segments(rt, views))


@segment.command("create")
@workspace_option
@click.option("--name", required=True)
@click.option("--rule", help="JSONLogic, inline or @FILE.")
@click.option("--conditions", help="Editor conditions (a group), inline or @FILE.")
@click.option("--description", default="")
@click.option("--dry-run", is_flag=True, help="Show the member count it would have; write nothing.")
@pass_runtime
def segment_create(rt: Runtime, workspace_id: str, name: str, rule: str | None, conditions: str | None,
                   description: str, dry_run: bool) -> None:
    """Create a segment from a JSONLogic rule or editor conditions."""
    given = rule_input(rule, conditions)
    if dry_run:
        preview = service.preview_rule(rt.uow(), workspace_id, given, now=rt.now())
        rt.emit(preview, lambda: click.echo(f"would have {preview['member_count']:,} members"))
        return
    view = service.create_segment(rt.uow(), workspace_id, name=name, rule=given, description=description, now=rt.now())
    rt.emit(view.to_dict(), lambda: print_segment(view, "created"))


@segment.command("edit")
@workspace_option
@click.argument("segment_id")
@click.option("--rule", help="JSONLogic, inline or @FILE.")
@click.option("--conditions", help="Editor conditions (a group), inline or @FILE.")
@click.option("--save-as", "save_as", help="Save the edited rule as a new segment with this name.")
@click.option("--dry-run", is_flag=True, help="Show how many would enter and exit; write nothing.")
@pass_runtime
def segment_edit(rt: Runtime, workspace_id: str, segment_id: str, rule: str | None, conditions: str | None,
                 save_as: str | None, dry_run: bool) -> None:
    """Edit a segment's rule (or save it as a new segment)."""
    given = rule_input(rule, conditions) if (rule or conditions) else None
    if dry_run:
        if given is None:
            raise SegmentsError("--dry-run previews a new rule: give --rule or --conditions")
        preview = service.preview_rule(rt.uow(), workspace_id, given, segment_id=None if save_as else segment_id, now=rt.now())
        rt.emit(preview, lambda: click.echo(
            f"+{preview.get('would_enter', preview['member_count']):,} would enter, "
            f"-{preview.get('would_exit', 0):,} would exit ({preview['member_count']:,} members)"))
        return
    if save_as:
        view = service.save_as_new(rt.uow(), workspace_id, segment_id, name=save_as, rule=given, now=rt.now())
        rt.emit(view.to_dict(), lambda: print_segment(view, "saved as new"))
        return
    if given is None:
        raise SegmentsError("give --rule or --conditions")
    view = service.edit_segment(rt.uow(), workspace_id, segment_id, rule=given, now=rt.now())
    rt.emit(view.to_dict(), lambda: print_segment(view, "edited"))


@segment.command("rename")
@workspace_option
@click.argument("segment_id")
@click.argument("name")
@pass_runtime
def segment_rename(rt: Runtime, workspace_id: str, segment_id: str, name: str) -> None:
    """Rename a segment (its id stays)."""
    view = service.rename_segment(rt.uow(), workspace_id, segment_id, name=name, now=rt.now())
    rt.emit(view.to_dict(), lambda: print_segment(view, "renamed"))


@segment.command("delete")
@workspace_option
@click.argument("segment_id")
@pass_runtime
def segment_delete(rt: Runtime, workspace_id: str, segment_id: str) -> None:
    """Delete a segment, its memberships and its pending events."""
    service.delete_segment(rt.uow(), workspace_id, segment_id, now=rt.now())
    rt.emit({"deleted": segment_id}, lambda: click.echo(f"deleted segment {segment_id}"))


@segment.command("members")
@workspace_option
@click.argument("segment_id")
@pass_runtime
def segment_members(rt: Runtime, workspace_id: str, segment_id: str) -> None:
    """Stream a segment's member ids, one per line (a JSON array with --json)."""
    batches = service.iter_members(rt.uow(), workspace_id, segment_id)
    if rt.as_json:
        click.echo(json.dumps([contact_id for batch in batches for contact_id in batch]))
        return
    for batch in batches:
        click.echo("\n".join(batch))


@segment.command("explain")
@workspace_option
@click.argument("segment_id")
@click.argument("contact_id")
@pass_runtime
def segment_explain(rt: Runtime, workspace_id: str, segment_id: str, contact_id: str) -> None:
    """Why a contact is or is not a member: each rule node's value."""
    report = service.explain(rt.uow(), workspace_id, segment_id, contact_id, now=rt.now())

    def render() -> None:
        verdict = "matches" if report["matches"] else "does not match"
        click.echo(f"contact {contact_id} {verdict} segment {report['segment_id']} {report['segment']!r} "
                   f"(stored member: {'yes' if report['member'] else 'no'})")
        click.echo("fields read: " + json.dumps(report["fields"], sort_keys=True))
        _print_tree(report["tree"], 0)

    rt.emit(report, render)


def _print_tree(node: dict[str, Any], depth: int) -> None:
    pad = "  " * depth
    value = json.dumps(node["value"])
    if "literal" in node:
        click.echo(f"{pad}{json.dumps(node['literal'])}")
    elif "field" in node:
        click.echo(f"{pad}var {node['field']} = {value}")
    else:
        click.echo(f"{pad}{node['op']} -> {value}")
        for child in node.get("args", []):
            _print_tree(child, depth + 1)


# --------------------------------------------------------------------------- export, validate, import


class ExportFileTooLarge(SegmentsError):
    """An export file over the size limit, refused before it is read."""


def read_export_file(name: str) -> str | bytes:
    """An export file's text (``-``: standard input), or its bytes if they are not UTF-8 (the
    checker says where).  A file over the size limit is refused by its size alone, before it is
    read; standard input is read no further than the limit."""
    limit = service.MAX_EXPORT_BYTES
    try:
        if name == "-":
            data = sys.stdin.buffer.read(limit + 1)
        else:
            path = Path(name)
            size = path.stat().st_size
            if size > limit:
                raise ExportFileTooLarge(f"{name}: {service.export_too_large_message(size)}")
            with path.open("rb") as stream:
                data = stream.read(limit + 1)
    except OSError as error:
        raise SegmentsError(f"cannot read {name!r}: {error.strerror}") from None
    if len(data) > limit:
        raise ExportFileTooLarge(f"{name}: {service.export_too_large_message(len(data))}")
    try:
        return data.decode("utf-8")  # from here on the text alone: a large file is not held twice
    except UnicodeDecodeError:
        return data


@main.command("export")
@workspace_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the export to FILE (default: standard output).")
@click.option("--segment", "segment_ids", multiple=True, help="Export only this segment (repeat for more).")
@pass_runtime
def export_command(rt: Runtime, workspace_id: str, output: str | None, segment_ids: tuple[str, ...]) -> None:
    """Export segment definitions as JSON (stable order: the same definitions give the same bytes
    at the same --now)."""
    document = service.export_segments(rt.uow(), workspace_id, segment_ids or None, now=rt.now())
    data = service.render_export(document).encode("utf-8")
    if output is None:
        click.echo(data, nl=False)
        return
    target = Path(output)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(data)
        partial.replace(target)  # never a half-written export under the real name
    except OSError as error:
        partial.unlink(missing_ok=True)
        raise SegmentsError(f"cannot write {output!r}: {error.strerror}") from None
    count = len(document["segments"])
    summary = {"file": output, "workspace_id": workspace_id, "segments": count, "bytes": len(data),
               "exported_at": document["exported_at"]}
    rt.emit(summary, lambda: click.echo(f"exported {count} segments of workspace {workspace_id} to {output} "
                                        f"({len(data):,} bytes)"))


@main.command("validate")
@click.argument("file")
@pass_runtime
def validate_command(rt: Runtime, file: str) -> None:
    """Check an export file without touching any database: every problem, each with its JSON
    path (exit status 2 if there is any)."""
    try:
        check = service.validate_export(read_export_file(file))
    except ExportFileTooLarge as error:
        check = service.ExportCheck(None, {"$": error.message.removeprefix(f"{file}: ")})

    def render() -> None:
        export = check.export
        if export is not None:
            click.echo(f"{file}: a valid export of {len(export.segments)} segments "
                       f"(format version {export.format_version}, from workspace {export.workspace_id}, "
                       f"{export.timezone})")
            return
        count = len(check.problems)
        click.echo(f"{file}: not a valid export, {count} problem{'s' * (count != 1)}:")
        for path, message in check.problems.items():
            click.echo(f"  {path}: {message}")

    rt.emit({"file": file, **check.to_dict()}, render)
    if not check.valid:
        click.get_current_context().exit(USER_ERROR)


@main.command("import")
@workspace_option
@click.argument("file")
@click.option("--on-conflict", type=click.Choice(service.ON_CONFLICT), default="skip", show_default=True,
              help="When a segment of that name exists: leave it, import as 'Name (2)', or replace its rule.")
@click.option("--dry-run", is_flag=True, help="Show what would happen to each segment; write nothing.")
@pass_runtime
def import_command(rt: Runtime, workspace_id: str, file: str, on_conflict: str, dry_run: bool) -> None:
    """Import an export file: all of it or, on any problem, nothing."""
    data = read_export_file(file)
    try:
        report = service.import_segments(rt.uow(), workspace_id, data, on_conflict=on_conflict,  # type: ignore[arg-type]
                                         dry_run=dry_run, now=rt.now())
    except service.InvalidInput as error:
        raise service.InvalidInput(f"{file}: {error.message}", error.messages) from None
    rt.emit({"file": file, **report.to_dict()}, lambda: print_import(report))


def print_import(report: service.ImportReport) -> None:
    for outcome in report.segments:
        name = json.dumps(outcome.name, ensure_ascii=False)
        where = f"segment {outcome.segment_id}" if outcome.segment_id is not None else "new segment"
        match outcome.action:
            case "created" | "renamed":
                line = f"{outcome.action:<9} {name}"
                if outcome.renamed_to is not None:
                    line += f" as {json.dumps(outcome.renamed_to, ensure_ascii=False)}"
                if report.dry_run:
                    line += f": {outcome.member_count:,} members"
                else:
                    line += f": {where}"
            case "replaced":
                line = f"replaced  {name}: {where}"
                if not outcome.changed:
                    line += ", unchanged"
                elif report.dry_run:
                    line += f", +{outcome.would_enter:,} would enter, -{outcome.would_exit:,} would exit"
            case _:
                line = f"skipped   {name}: {where} has this name"
        click.echo(line)
    counts = ", ".join(f"{number} {action}" for action, number in report.counts().items())
    if report.dry_run:
        click.echo(f"dry run, nothing was written: {counts}")
    else:
        click.echo(f"imported into workspace {report.workspace_id}: {counts}")


# --------------------------------------------------------------------------- contacts


@main.group()
def contacts() -> None:
    """Upsert and delete contact snapshots."""


@contacts.command("upsert")
@workspace_option
@click.argument("source", type=click.File("rb"), default="-")
@click.option("--batch-size", default=1000, show_default=True)
@pass_runtime
def contacts_upsert(rt: Runtime, workspace_id: str, source: BinaryIO, batch_size: int) -> None:
    """Upsert snapshots from JSON Lines (FILE or - for standard input).

    The whole input is validated first: a bad line stops it all, naming its line number.
    """
    snapshots: list[dict[str, Any]] = []
    for number, document in iter_json_lines(source, max_values=MAX_SNAPSHOT_VALUES):  # a bad line stops the rest
        snapshots += service.load_snapshots([document], labels=[f"line {number}"])
    if not snapshots:
        raise SegmentsError("no snapshots to upsert: the input is empty (one JSON object per line)")
    stored = 0
    uow = rt.uow()
    with rt.progress("upserting contacts", len(snapshots)) as advance:
        for start in range(0, len(snapshots), batch_size):
            chunk = snapshots[start : start + batch_size]
            stored += len(service.upsert_snapshots(uow, workspace_id, chunk, now=rt.now()))
            advance(len(chunk))
    rt.emit({"received": len(snapshots), "stored": stored},
            lambda: click.echo(f"{stored:,} of {len(snapshots):,} snapshots stored (the rest were stale or duplicates)"))


@contacts.command("delete")
@workspace_option
@click.argument("contact_id")
@pass_runtime
def contacts_delete(rt: Runtime, workspace_id: str, contact_id: str) -> None:
    """Delete a contact: it exits every segment."""
    diff = service.delete_contact(rt.uow(), workspace_id, contact_id, now=rt.now())
    rt.emit({"deleted": contact_id, "exited": len(diff.exited)},
            lambda: click.echo(f"deleted contact {contact_id}; exited {len(diff.exited)} segments"))


# --------------------------------------------------------------------------- time, rebuilds, events


@main.command()
@workspace_option
@click.option("--segment", "segment_id", help="Only this segment.")
@click.option("--incremental", is_flag=True,
              help="Compare only the contacts changed (or due to flip) since each segment's last build.")
@pass_runtime
def recompute(rt: Runtime, workspace_id: str, segment_id: str | None, incremental: bool) -> None:
    """Rebuild segments in SQL, repairing any drift (with events for each change).

    By default every contact is compared with the stored memberships; --incremental compares
    only those the database stamped as changed since the segment's last build."""
    uow = rt.uow()
    targets = [service.segment_view(uow, workspace_id, segment_id)] if segment_id else service.list_segments(uow, workspace_id)
    results = []
    with rt.progress("rebuilding", len(targets)) as advance:
        for view in targets:
            result = service.rebuild_segment(uow, workspace_id, view.id, now=rt.now(), cause=EventCause.SWEEP,
                                             incremental=incremental)
            results.append({"segment_id": view.id, "entered": result.entered, "exited": result.exited,
                            "member_count": result.member_count})
            advance(1)
    uow.dispatcher.dispatch([service.DeliverEvents(workspace_id)])
    rt.emit(results, lambda: [click.echo(f"segment {r['segment_id']}: +{r['entered']} -{r['exited']} "
                                         f"({r['member_count']:,} members)") for r in results])


@main.command()
@workspace_option
@pass_runtime
def tick(rt: Runtime, workspace_id: str) -> None:
    """Apply the time-based flips since the last tick (at --now, or the current time)."""
    result = service.tick(rt.uow(), workspace_id, now=rt.now())
    data = {"workspace_id": workspace_id, "from": result.start, "to": result.end, "candidates": result.candidates,
            "entered": result.entered, "exited": result.exited, "skipped": result.skipped}
    rt.emit(data, lambda: click.echo(
        "nothing to do: the last tick is not older than --now" if result.skipped else
        f"tick: {result.candidates} candidates, +{result.entered} entered, -{result.exited} exited"))


@main.command()
@workspace_option
@click.option("--after", "after_event_id", help="Only events after this event id.")
@click.option("--limit", default=1000, show_default=True)
@pass_runtime
def events(rt: Runtime, workspace_id: str, after_event_id: str | None, limit: int) -> None:
    """List membership events, oldest first."""
    views = service.list_events(rt.uow(), workspace_id, after_event_id=after_event_id, limit=limit)

    def render() -> None:
        table = Table("event id", "segment", "contact", "kind", "cause", "at")
        for e in views:
            at = datetime.fromtimestamp(e.occurred_at).astimezone().isoformat(timespec="seconds")
            who = e.contact_id if e.contact_id is not None else f"({e.member_count} members)"
            table.add_row(e.event_id, str(e.segment_id), who, e.kind, e.cause, at)
        rt.console.print(table)

    rt.emit([e.to_dict() for e in views], render)


@main.command()
@click.option("--concurrency", default=2, show_default=True, help="Worker processes.")
@click.option("--loglevel", default="info", show_default=True)
@pass_runtime
def worker(rt: Runtime, concurrency: int, loglevel: str) -> None:
    """Run a Celery worker (needs SEGMENTS_BROKER_URL)."""
    rt.celery_app().worker_main(["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}"])


@main.command()
@click.option("--loglevel", default="info", show_default=True)
@click.option("--schedule-file", default="segments-beat-schedule", show_default=True)
@pass_runtime
def beat(rt: Runtime, loglevel: str, schedule_file: str) -> None:
    """Run the Celery beat: the tick every minute, deliveries, sweeps (one beat per deployment)."""
    rt.celery_app().start(["beat", f"--loglevel={loglevel}", f"--schedule={schedule_file}"])


@main.command()
@click.option("--contacts", "contact_count", default=10_000, show_default=True)
@click.option("--seed", default=7, show_default=True)
@pass_runtime
def demo(rt: Runtime, contact_count: int, seed: int) -> None:
    """Show the whole product on the embedded default, in about ten seconds."""
    from .demo import run_demo

    run_demo(rt, contact_count=contact_count, seed=seed)


if __name__ == "__main__":  # pragma: no cover
    main()
