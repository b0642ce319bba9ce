"""Export and import of segment definitions on SQLite and PostgreSQL: the round trip, conflicts,
dry runs, the 500 limit, all-or-nothing, and every kind of bad input through the CLI (exit status
2, a clear message, and the database exactly as it was: every row of every table compared)."""

from __future__ import annotations

import copy
import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from contact_segments import cli
from contact_segments.rules.transfer import FORMAT_VERSION, dump_export, format_instant
from contact_segments.service import (
    Command,
    InlineDispatcher,
    InvalidInput,
    LimitReached,
    NotFound,
    RuleInput,
    SegmentsError,
    UnitOfWork,
    create_segment,
    create_workspace,
    delete_segment,
    edit_segment,
    export_segments,
    import_segments,
    list_segments,
    render_export,
    upsert_contacts,
)
from contact_segments.service import transfer as transfer_module
from contact_segments.storage import (
    Base,
    Contact,
    Membership,
    MembershipEvent,
    Segment,
    SegmentChange,
    Workspace,
    load_contact_views,
)
from tests.support.jsoracle import require_oracle

NOW = 1_780_000_000.0  # 2026-05-28T20:26:40Z
DAY = 86_400
A, B, C = "ws-a", "ws-b", "ws-c"
DEFAULT_NAMES = [
    "Contacts created <7 days ago",
    "Contacts inactive >30 days",
    "Contacts with tags",
    "Country known",
    "Language known",
]
MALAYSIA_VIP = {"and": [{"==": [{"var": "country"}, "MY"]}, {"in": ["vip", {"var": "tags"}]}]}
COMPLEX = {
    "and": [
        {"===": [{"var": "country"}, "MY"]},
        {"or": [{"in": ["promotion", {"var": "tags"}]}, {"in": [{"var": "language"}, ["en", "ms"]]}]},
        {"!!": [{"var": "email"}]},
        {
            "and": [
                {"!!": [{"var": "last_incoming_message_at"}]},
                {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 30 * DAY]}]},
            ]
        },
        {
            "and": [
                {"!": [{"missing": ["custom_fields.orders"]}]},
                {"<=": [1, {"var": "custom_fields.orders"}, 10]},
            ]
        },
    ]
}
ADVANCED = {"if": [{"var": "email"}, {"!!": [{"var": "phone"}]}, False]}


# --------------------------------------------------------------------------- helpers


@dataclass
class Recorder:
    """Runs follow-up work inline (rebuilds, deliveries) and records every command."""

    session_factory: sessionmaker[Session]
    commands: list[Command] = field(default_factory=list)
    runs_elsewhere: ClassVar[bool] = False

    def __post_init__(self) -> None:
        self.inline = InlineDispatcher(self.session_factory, clock=lambda: NOW)

    def dispatch(self, commands: Iterable[Command]) -> None:
        commands = list(commands)
        self.commands.extend(commands)
        self.inline.dispatch(commands)


@pytest.fixture
def recorder(session_factory: sessionmaker[Session]) -> Recorder:
    return Recorder(session_factory)


@pytest.fixture
def uow(session_factory: sessionmaker[Session], recorder: Recorder) -> UnitOfWork:
    return UnitOfWork(session_factory, recorder)


@pytest.fixture
def bare_uow(session_factory: sessionmaker[Session]) -> UnitOfWork:
    """No dispatcher: follow-up work (first builds) is not run."""
    return UnitOfWork(session_factory)


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary key order."""
    rows = {}
    with engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            statement = select(table).order_by(*table.primary_key.columns)
            rows[table.name] = [tuple(row) for row in connection.execute(statement)]
    return rows


def iso(instant: float) -> str:
    return datetime.fromtimestamp(instant, UTC).isoformat()


def contacts(count: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    result = []
    for number in range(count):
        incoming = None if rng.random() < 0.3 else NOW - rng.uniform(0, 60 * DAY)
        document = {
            "id": f"c{number:03d}",
            "version": 1,
            "country": rng.choice(["MY", "MY", "SG", None]),
            "language": rng.choice(["en", "ms", None]),
            "email": rng.choice([f"c{number}@example.com", None]),
            "phone": rng.choice(["+60123", None]),
            "tags": rng.sample(["vip", "promotion", "b2b"], rng.randint(0, 2)),
            "created_at": iso(NOW - rng.uniform(0, 14 * DAY)),
            "custom_fields": {"orders": rng.randint(0, 20)},
        }
        if incoming is not None:
            document["last_incoming_message_at"] = iso(incoming)
        result.append(document)
    return result


def workspace_with_segments(
    uow: UnitOfWork, workspace_id: str, *, timezone: str = "Asia/Kuala_Lumpur"
) -> None:
    """The five defaults (one edited), and segments of every kind: conditions with a date, a
    complex rule, an advanced rule, a Unicode name with a description."""
    create_workspace(uow, workspace_id, timezone=timezone, now=NOW)
    upsert_contacts(uow, workspace_id, contacts(60), now=NOW)
    views = {view.name: view for view in list_segments(uow, workspace_id)}
    edit_segment(
        uow,
        workspace_id,
        views["Country known"].id,
        rule=RuleInput(rule={"in": [{"var": "country"}, ["MY", "SG"]]}),
        now=NOW,
    )
    create_segment(uow, workspace_id, name="Malaysian VIPs", rule=RuleInput(rule=MALAYSIA_VIP), now=NOW)
    create_segment(
        uow,
        workspace_id,
        name="Complex",
        rule=RuleInput(rule=COMPLEX),
        now=NOW,
        description="five conditions",
    )
    create_segment(uow, workspace_id, name="Advanced", rule=RuleInput(rule=ADVANCED), now=NOW)
    create_segment(
        uow,
        workspace_id,
        name="Créés en janvier — 客户",
        description="née «naïve»",
        now=NOW,
        rule=RuleInput(
            conditions={
                "op": "and",
                "conditions": [
                    {
                        "category": "contact_field",
                        "field": "created_at",
                        "operator": "is_timestamp_between",
                        "value": {"from": "2026-01-01", "to": "2026-01-31"},
                    }
                ],
            }
        ),
    )


def definitions(document: dict[str, Any]) -> list[dict[str, Any]]:
    return document["segments"]


def events_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(MembershipEvent.seq)).all())


def segment_ids(engine: Engine, workspace_id: str) -> dict[str, int]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(Segment.name, Segment.id).where(Segment.workspace_id == workspace_id)
        )
        return dict(rows.tuples().all())


# --------------------------------------------------------------------------- export


def test_export_is_stable_complete_and_has_no_memberships(uow: UnitOfWork, engine: Engine) -> None:
    workspace_with_segments(uow, A)
    document = export_segments(uow, A, now=NOW)
    assert set(document) == {"format", "format_version", "exported_at", "workspace", "segments"}
    assert document["format_version"] == FORMAT_VERSION
    assert document["exported_at"] == "2026-05-28T20:26:40Z"
    assert document["workspace"] == {"id": A, "timezone": "Asia/Kuala_Lumpur"}
    names = [item["name"] for item in document["segments"]]
    assert names == sorted(names, key=str.casefold)
    assert len(names) == 9
    for item in document["segments"]:
        assert set(item) == {"name", "description", "rule", "conditions", "is_default"}
    by_name = {item["name"]: item for item in document["segments"]}
    assert by_name["Advanced"]["conditions"] is None  # the rule does not fit the condition model
    assert by_name["Complex"]["description"] == "five conditions"
    assert by_name["Country known"]["is_default"] is True and by_name["Complex"]["is_default"] is False
    # 2026-01-01 to 2026-01-31 in Kuala Lumpur (UTC+8), both ends included
    when = by_name["Créés en janvier — 客户"]["rule"]["and"][1]["<="]
    assert when[0] == 1767196800 and when[2] == 1769788800

    text = render_export(document)
    assert render_export(export_segments(uow, A, now=NOW)) == text  # byte-identical
    later = render_export(export_segments(uow, A, now=NOW + 3600.5))
    changed = [(a, b) for a, b in zip(text.splitlines(), later.splitlines(), strict=True) if a != b]
    assert changed == [
        ('  "exported_at": "2026-05-28T20:26:40Z",', '  "exported_at": "2026-05-28T21:26:40Z",')
    ]


def test_export_orders_by_name_key_then_id_and_selects(uow: UnitOfWork, engine: Engine) -> None:
    create_workspace(uow, A, now=NOW)
    for name in ["b", "A", "a2", "C"]:
        create_segment(uow, A, name=name, rule=RuleInput(rule=True), now=NOW)
    ids = segment_ids(engine, A)
    document = export_segments(uow, A, now=NOW)
    assert [item["name"] for item in document["segments"]][:4] == ["A", "a2", "b", "C"]
    chosen = export_segments(uow, A, [str(ids["C"]), ids["A"], ids["C"]], now=NOW)
    assert [item["name"] for item in chosen["segments"]] == ["A", "C"]


def test_export_refuses_unknown_ids_and_empty_workspaces(uow: UnitOfWork, engine: Engine) -> None:
    create_workspace(uow, A, now=NOW)
    create_workspace(uow, B, now=NOW)
    other = segment_ids(engine, B)["Country known"]
    with pytest.raises(NotFound):
        export_segments(uow, A, [other], now=NOW)
    with pytest.raises(NotFound):
        export_segments(uow, A, ["nope"], now=NOW)
    with pytest.raises(NotFound):
        export_segments(uow, "no-such-workspace", now=NOW)
    for segment_id in segment_ids(engine, A).values():
        delete_segment(uow, A, segment_id, now=NOW)
    with pytest.raises(InvalidInput, match="nothing to export"):
        export_segments(uow, A, now=NOW)


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("on_conflict", ["replace", "skip"])
def test_round_trip_into_a_new_workspace(
    uow: UnitOfWork, engine: Engine, recorder: Recorder, on_conflict: str
) -> None:
    workspace_with_segments(uow, A)
    exported = export_segments(uow, A, now=NOW)
    create_workspace(uow, B, timezone="UTC", now=NOW)  # seeded with the five defaults
    report = import_segments(uow, B, render_export(exported), on_conflict=on_conflict, now=NOW + 60)  # type: ignore[arg-type]
    again = export_segments(uow, B, now=NOW)
    if on_conflict == "replace":
        assert definitions(again) == definitions(exported)
        assert report.counts() == {"created": 4, "renamed": 0, "replaced": 5, "skipped": 0}
        # Only the default A had edited changes; its id in B stays.
        replaced = {o.name: o for o in report.segments if o.action == "replaced"}
        assert [name for name, o in replaced.items() if o.changed] == ["Country known"]
        assert replaced["Country known"].segment_id == segment_ids(engine, B)["Country known"]
    else:
        # B keeps its own "Country known"; everything else is A's.
        mine = [item for item in definitions(again) if item["name"] != "Country known"]
        assert mine == [item for item in definitions(exported) if item["name"] != "Country known"]
        assert report.counts() == {"created": 4, "renamed": 0, "replaced": 0, "skipped": 5}
    # Only ids, times and the workspace differ between the two exports.
    same_envelope = {**again, "workspace": exported["workspace"]}
    if on_conflict == "replace":
        assert dump_export(same_envelope) == dump_export(exported)


def test_round_trip_with_contacts_gives_the_same_members(uow: UnitOfWork, engine: Engine) -> None:
    workspace_with_segments(uow, A)
    create_workspace(uow, B, now=NOW)
    upsert_contacts(uow, B, contacts(60), now=NOW)  # the same contacts
    import_segments(uow, B, export_segments(uow, A, now=NOW), on_conflict="replace", now=NOW)

    def members(workspace_id: str) -> dict[str, set[str]]:
        ids = segment_ids(engine, workspace_id)
        with engine.connect() as connection:
            return {
                name: set(
                    connection.scalars(select(Membership.contact_id).where(Membership.segment_id == ident))
                )
                for name, ident in ids.items()
            }

    assert members(A) == members(B)
    assert any(members(A).values())


def test_exported_rules_mean_the_same_in_json_logic_js(uow: UnitOfWork, engine: Engine) -> None:
    """Portability: each exported rule, run by json-logic-js over the evaluation views of the
    stored contacts (epoch-second timestamps, ``now``), selects exactly the segment's members."""
    workspace_with_segments(uow, A)
    document = json.loads(render_export(export_segments(uow, A, now=NOW)))
    ids = segment_ids(engine, A)
    with uow:
        contact_ids = uow.session.scalars(select(Contact.id).where(Contact.workspace_id == A)).all()
        views = list(load_contact_views(uow.session, A, contact_ids).values())
        members = {
            name: set(
                uow.session.scalars(select(Membership.contact_id).where(Membership.segment_id == ident))
            )
            for name, ident in ids.items()
        }
    cases = [(item["rule"], {**view, "now": NOW}) for item in document["segments"] for view in views]
    with require_oracle() as js:
        results = js.evaluate([({"!!": [rule]}, data) for rule, data in cases])
    assert not any(result.raised for result in results)
    for index, item in enumerate(document["segments"]):
        chosen = results[index * len(views) : (index + 1) * len(views)]
        matched = {view["id"] for view, result in zip(views, chosen, strict=True) if result.value is True}
        assert matched == members[item["name"]], item["name"]
    assert any(members.values())


def test_importing_the_same_file_twice_with_skip_changes_nothing(
    uow: UnitOfWork, engine: Engine, recorder: Recorder
) -> None:
    workspace_with_segments(uow, A)
    text = render_export(export_segments(uow, A, now=NOW))
    create_workspace(uow, B, now=NOW)
    first = import_segments(uow, B, text, now=NOW)
    assert first.counts()["created"] == 4
    before, commands = dump(engine), len(recorder.commands)
    second = import_segments(uow, B, text, now=NOW + 10)
    assert second.counts() == {"created": 0, "renamed": 0, "replaced": 0, "skipped": 9}
    assert dump(engine) == before
    assert len(recorder.commands) == commands


@pytest.mark.parametrize("into", [A, C])
def test_the_defaults_export_replaced_into_a_workspace_that_has_them_changes_nothing(
    uow: UnitOfWork, engine: Engine, recorder: Recorder, into: str
) -> None:
    create_workspace(uow, A, now=NOW)
    create_workspace(uow, C, now=NOW)
    for workspace_id in (A, C):
        upsert_contacts(uow, workspace_id, contacts(40), now=NOW)
    text = render_export(export_segments(uow, A, now=NOW))
    assert [item["name"] for item in json.loads(text)["segments"]] == DEFAULT_NAMES
    before, events, commands = dump(engine), events_count(engine), len(recorder.commands)
    report = import_segments(uow, into, text, on_conflict="replace", now=NOW + DAY)
    assert [(o.action, o.changed) for o in report.segments] == [("replaced", False)] * 5
    assert report.segments[0].segment_id == segment_ids(engine, into)[DEFAULT_NAMES[0]]
    assert dump(engine) == before  # rule versions, times, memberships: all as they were
    assert events_count(engine) == events
    assert len(recorder.commands) == commands  # no rebuild, no "segment changed"


# --------------------------------------------------------------------------- conflicts


def file_of(
    *items: tuple[str, Any], workspace_id: str = "elsewhere", description: str = ""
) -> dict[str, Any]:
    return {
        "format": "contact-segments/export",
        "format_version": 1,
        "exported_at": format_instant(NOW),
        "workspace": {"id": workspace_id, "timezone": "UTC"},
        "segments": [
            {"name": name, "description": description, "rule": rule, "conditions": None, "is_default": False}
            for name, rule in items
        ],
    }


def test_rename_picks_the_first_free_number(uow: UnitOfWork, engine: Engine) -> None:
    create_workspace(uow, A, now=NOW)
    create_segment(uow, A, name="VIP ", rule=RuleInput(rule=True), now=NOW)
    create_segment(uow, A, name="vip (2)", rule=RuleInput(rule=True), now=NOW)
    long = "x" * 100
    create_segment(uow, A, name=long, rule=RuleInput(rule=True), now=NOW)
    document = file_of(("VIP", MALAYSIA_VIP), ("Vip (3)", True), (long.upper(), True), ("New", True))
    report = import_segments(uow, A, document, on_conflict="rename", now=NOW)
    outcomes = [(o.name, o.action, o.renamed_to) for o in report.segments]
    assert outcomes == [
        ("VIP", "renamed", "VIP (4)"),  # (2) exists, (3) is in the file
        ("Vip (3)", "created", None),
        (long.upper(), "renamed", "X" * 96 + " (2)"),
        ("New", "created", None),
    ]
    ids = segment_ids(engine, A)
    assert {"VIP (4)", "Vip (3)", "X" * 96 + " (2)", "New"} <= set(ids)
    assert report.segments[0].segment_id == ids["VIP (4)"]


def test_replace_keeps_the_id_and_sends_events_for_the_change(
    uow: UnitOfWork, engine: Engine, recorder: Recorder, session_factory: sessionmaker[Session]
) -> None:
    create_workspace(uow, A, now=NOW)
    upsert_contacts(uow, A, contacts(80), now=NOW)
    vip = create_segment(uow, A, name="VIP", rule=RuleInput(rule={"in": ["vip", {"var": "tags"}]}), now=NOW)
    document = file_of(("vip", MALAYSIA_VIP), description="Malaysians only")

    preview = import_segments(uow, A, document, on_conflict="replace", dry_run=True, now=NOW)
    (outcome,) = preview.segments
    assert (outcome.action, outcome.segment_id, outcome.changed) == ("replaced", vip.id, True)
    with session_factory() as session:
        before_members = set(
            session.scalars(select(Membership.contact_id).where(Membership.segment_id == vip.id))
        )
    events = events_count(engine)

    report = import_segments(uow, A, document, on_conflict="replace", now=NOW)
    assert report.segments[0].segment_id == vip.id
    with session_factory() as session:
        segment = session.get(Segment, vip.id)
        assert segment is not None
        assert (segment.name, segment.rule, segment.rule_version) == ("VIP", MALAYSIA_VIP, 2)
        assert segment.description == "Malaysians only"
        after_members = set(
            session.scalars(select(Membership.contact_id).where(Membership.segment_id == vip.id))
        )
        new_events = session.execute(
            select(MembershipEvent.kind, MembershipEvent.cause).where(MembershipEvent.seq > events)
        ).all()
    assert len(after_members - before_members) == outcome.would_enter
    assert len(before_members - after_members) == outcome.would_exit
    assert outcome.would_enter + outcome.would_exit > 0
    assert sorted(new_events) == sorted(
        [("entered", "rule_edited")] * outcome.would_enter + [("exited", "rule_edited")] * outcome.would_exit
    )
    with session_factory() as session:
        changes = session.execute(select(SegmentChange.segment_id, SegmentChange.change, SegmentChange.rule_version)).all()
    assert (vip.id, "edited", 2) in [tuple(c) for c in changes]


def test_a_description_change_alone_is_written_without_events(
    uow: UnitOfWork, engine: Engine, recorder: Recorder, session_factory: sessionmaker[Session]
) -> None:
    create_workspace(uow, A, now=NOW)
    vip = create_segment(uow, A, name="VIP", rule=RuleInput(rule={"in": ["vip", {"var": "tags"}]}), now=NOW)
    commands = len(recorder.commands)
    report = import_segments(
        uow,
        A,
        file_of(("VIP", {"in": ["vip", {"var": "tags"}]}), description="new words"),
        on_conflict="replace",
        now=NOW,
    )
    assert report.segments[0].changed is True
    with session_factory() as session:
        segment = session.get(Segment, vip.id)
        assert segment is not None and (segment.description, segment.rule_version) == ("new words", 1)
    assert len(recorder.commands) == commands


# --------------------------------------------------------------------------- dry run


def test_a_dry_run_writes_nothing_and_predicts_member_counts(
    uow: UnitOfWork, engine: Engine, recorder: Recorder
) -> None:
    create_workspace(uow, A, now=NOW)
    upsert_contacts(uow, A, contacts(80), now=NOW)
    document = file_of(
        ("Malaysian VIPs", MALAYSIA_VIP), ("Complex", COMPLEX), ("Country known", {"!": [{"var": "country"}]})
    )
    before, commands = dump(engine), len(recorder.commands)
    for on_conflict in ("skip", "rename", "replace"):
        preview = import_segments(uow, A, document, on_conflict=on_conflict, dry_run=True, now=NOW)  # type: ignore[arg-type]
        assert preview.dry_run
        assert dump(engine) == before
        assert len(recorder.commands) == commands
    predicted = {o.name: o for o in preview.segments}
    assert predicted["Country known"].action == "replaced"

    report = import_segments(uow, A, document, on_conflict="replace", now=NOW)
    counts = {view.name: view.member_count for view in list_segments(uow, A)}
    assert counts["Malaysian VIPs"] == predicted["Malaysian VIPs"].member_count > 0
    assert counts["Complex"] == predicted["Complex"].member_count
    assert [o.action for o in report.segments] == ["created", "created", "replaced"]


# --------------------------------------------------------------------------- limits, all or nothing


def test_the_500_limit_counts_what_exists(bare_uow: UnitOfWork, engine: Engine) -> None:
    create_workspace(bare_uow, A, now=NOW)  # five defaults
    items = [(name, True) for name in DEFAULT_NAMES] + [(f"S{i:03d}", True) for i in range(495)]
    document = file_of(*items)
    before = dump(engine)
    with pytest.raises(LimitReached, match="importing would create 500 segments in a workspace that has 5"):
        import_segments(bare_uow, A, document, on_conflict="rename", now=NOW)
    assert dump(engine) == before
    with pytest.raises(LimitReached):
        import_segments(bare_uow, A, file_of(*items[5:], ("One too many", True)), now=NOW)
    assert dump(engine) == before
    report = import_segments(bare_uow, A, document, on_conflict="skip", now=NOW)  # 5 skipped, 495 created
    assert report.counts() == {"created": 495, "renamed": 0, "replaced": 0, "skipped": 5}
    with bare_uow:
        workspace = bare_uow.session.get(Workspace, A)
        assert workspace is not None and workspace.segment_count == 500


def test_a_failure_midway_writes_nothing(
    uow: UnitOfWork, engine: Engine, recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_workspace(uow, A, now=NOW)
    create_segment(uow, A, name="VIP", rule=RuleInput(rule=True), now=NOW)
    create_segment(uow, A, name="Taken", rule=RuleInput(rule=True), now=NOW)
    before, commands = dump(engine), len(recorder.commands)
    real = transfer_module._plan

    def stale_plan(*args: Any, **kwargs: Any) -> Any:
        # As if another request had created "Taken" between the plan and the writes.
        plan = real(*args, **kwargs)
        plan[3].name = "Taken"
        return plan

    monkeypatch.setattr(transfer_module, "_plan", stale_plan)
    document = file_of(("One", True), ("VIP", MALAYSIA_VIP), ("Two", True), ("Three", True))
    with pytest.raises(SegmentsError, match="nothing was imported; import again"):
        import_segments(uow, A, document, on_conflict="replace", now=NOW)
    assert dump(engine) == before  # neither the creations nor the replacement of "VIP"
    assert len(recorder.commands) == commands


def test_import_into_an_unknown_workspace(uow: UnitOfWork) -> None:
    with pytest.raises(NotFound):
        import_segments(uow, "nowhere", file_of(("One", True)), now=NOW)


def test_imported_segments_keep_is_default_and_descriptions(uow: UnitOfWork, engine: Engine) -> None:
    create_workspace(uow, A, now=NOW)
    for segment_id in segment_ids(engine, A).values():
        delete_segment(uow, A, segment_id, now=NOW)
    create_workspace(uow, B, now=NOW)
    exported = export_segments(uow, B, now=NOW)
    exported["segments"][0]["description"] = "from B"
    report = import_segments(uow, A, exported, now=NOW)
    assert report.counts()["created"] == 5
    again = export_segments(uow, A, now=NOW)
    assert definitions(again) == definitions(exported)
    assert all(item["is_default"] for item in definitions(again))
    create_workspace(uow, A, now=NOW)  # a deleted default still never comes back by itself
    assert len(segment_ids(engine, A)) == 5


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def run(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.delenv("SEGMENTS_BROKER_URL", raising=False)
    runner = CliRunner()

    def invoke(*args: str) -> Any:
        return runner.invoke(cli.main, ["--db", db_url, "--now", str(NOW), *args], catch_exceptions=False)

    return invoke


def test_cli_export_validate_import(run: Any, uow: UnitOfWork, engine: Engine, tmp_path: Path) -> None:
    workspace_with_segments(uow, A)
    create_workspace(uow, B, now=NOW)
    path = tmp_path / "a.json"

    result = run("export", "-w", A, "-o", str(path))
    assert result.exit_code == 0, result.output
    assert (
        result.stdout == f"exported 9 segments of workspace {A} to {path} ({path.stat().st_size:,} bytes)\n"
    )
    stdout = run("export", "-w", A).stdout_bytes
    assert stdout == path.read_bytes()  # byte-identical
    summary = json.loads(run("--json", "export", "-w", A, "-o", str(tmp_path / "b.json")).stdout)
    assert summary["segments"] == 9 and summary["bytes"] == path.stat().st_size
    one = run("export", "-w", A, "--segment", str(segment_ids(engine, A)["Complex"]))
    assert [item["name"] for item in json.loads(one.stdout)["segments"]] == ["Complex"]

    result = run("validate", str(path))
    assert result.exit_code == 0
    assert result.stdout == (
        f"{path}: a valid export of 9 segments (format version 1, from workspace {A}, Asia/Kuala_Lumpur)\n"
    )
    checked = json.loads(run("--json", "validate", str(path)).stdout)
    assert checked == {
        "file": str(path),
        "valid": True,
        "format_version": 1,
        "workspace": {"id": A, "timezone": "Asia/Kuala_Lumpur"},
        "segments": 9,
        "problems": [],
    }

    before = dump(engine)
    result = run("import", "-w", B, str(path), "--dry-run", "--on-conflict", "rename")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert 'created   "Complex": 0 members' in lines
    assert 'renamed   "Country known" as "Country known (2)": 0 members' in lines
    assert lines[-1] == "dry run, nothing was written: 4 created, 5 renamed, 0 replaced, 0 skipped"
    preview = json.loads(
        run("--json", "import", "-w", B, str(path), "--dry-run", "--on-conflict", "replace").stdout
    )
    assert preview["dry_run"] is True and preview["counts"]["replaced"] == 5
    changed = [s for s in preview["segments"] if s["action"] == "replaced" and s["changed"]]
    assert [(s["name"], s["would_enter"], s["would_exit"]) for s in changed] == [("Country known", 0, 0)]
    assert dump(engine) == before

    result = run("import", "-w", B, str(path), "--on-conflict", "replace")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.splitlines()[-1]
        == f"imported into workspace {B}: 4 created, 0 renamed, 5 replaced, 0 skipped"
    )
    assert f'replaced  "Country known": segment {segment_ids(engine, B)["Country known"]}\n' in result.stdout
    assert f'replaced  "Language known": segment {segment_ids(engine, B)["Language known"]}, unchanged\n' in (
        result.stdout
    )
    report = json.loads(run("--json", "import", "-w", B, str(path)).stdout)
    assert report["counts"] == {"created": 0, "renamed": 0, "replaced": 0, "skipped": 9}
    assert report["segments"][0]["segment_id"] == segment_ids(engine, B)[report["segments"][0]["name"]]


def test_cli_segment_edit_dry_run_previews_enter_and_exit(run: Any, uow: UnitOfWork, engine: Engine) -> None:
    create_workspace(uow, A, now=NOW)
    upsert_contacts(uow, A, contacts(50), now=NOW)
    vip = create_segment(uow, A, name="VIP", rule=RuleInput(rule={"in": ["vip", {"var": "tags"}]}), now=NOW)
    before = dump(engine)
    result = run(
        "--json", "segment", "edit", "-w", A, str(vip.id), "--rule", json.dumps(MALAYSIA_VIP), "--dry-run"
    )
    preview = json.loads(result.stdout)
    assert preview["would_exit"] > 0 and preview["would_enter"] == 0
    text = run(
        "segment", "edit", "-w", A, str(vip.id), "--rule", json.dumps(MALAYSIA_VIP), "--dry-run"
    ).stdout
    assert text == (
        f"+{preview['would_enter']:,} would enter, -{preview['would_exit']:,} would exit "
        f"({preview['member_count']:,} members)\n"
    )
    assert dump(engine) == before


# --------------------------------------------------------------------------- bad input via the CLI


def good_document() -> dict[str, Any]:
    return file_of(("Malaysian VIPs", MALAYSIA_VIP), ("Complex", COMPLEX), workspace_id=A)


def mutated(change: Any) -> bytes:
    document = copy.deepcopy(good_document())
    change(document)
    return json.dumps(document).encode()


def deep_rule(levels: int) -> Any:
    rule: Any = {"!!": [{"var": "country"}]}
    for _ in range(levels):
        rule = {"!": [rule]}
    return rule


BAD_INPUT: dict[str, tuple[Any, str, str]] = {
    # case: (file content, path in the message, words of the message)
    "not JSON": (b'{"format": "contact-segments/export",', "$", "not JSON"),
    "not UTF-8": (b"\xff\xfe\x00{", "$", "not JSON: not UTF-8 text"),
    "a list": (b"[1, 2, 3]", "$", "not an export: expected a JSON object"),
    "a bare rule": (json.dumps(MALAYSIA_VIP).encode(), "$", "not a contact-segments export"),
    "newer format": (
        mutated(lambda d: d.update(format_version=2)),
        "format_version",
        "newer than this contact-segments",
    ),
    "missing envelope field": (
        mutated(lambda d: d.pop("exported_at")),
        "exported_at",
        "required field is missing",
    ),
    "missing workspace field": (
        mutated(lambda d: d["workspace"].pop("timezone")),
        "workspace.timezone",
        "required field is missing",
    ),
    "missing segment field": (
        mutated(lambda d: d["segments"][1].pop("is_default")),
        "segments[1].is_default",
        "required field is missing",
    ),
    "unknown envelope field": (mutated(lambda d: d.update(memberships=[])), "memberships", "unknown field"),
    "unknown workspace field": (
        mutated(lambda d: d["workspace"].update(name="A")),
        "workspace.name",
        "unknown field",
    ),
    "unknown segment field": (
        mutated(lambda d: d["segments"][0].update(member_count=3)),
        "segments[0].member_count",
        "unknown field",
    ),
    "rule with an unknown field": (
        mutated(lambda d: d["segments"][1].update(rule={"and": [MALAYSIA_VIP, {"!!": [{"var": "contry"}]}]})),
        "segments[1].rule.and[1].!![0].var",
        "unknown field 'contry'",
    ),
    "rule with an unknown operator": (
        mutated(
            lambda d: d["segments"][0].update(
                rule={"and": [MALAYSIA_VIP, {"regex": ["x", {"var": "email"}]}]}
            )
        ),
        "segments[0].rule.and[1].regex",
        "unknown operator 'regex'",
    ),
    "rule with wrong types": (
        mutated(lambda d: d["segments"][0].update(rule={"==": [{"var": "country"}, ["MY"]]})),
        "segments[0].rule.==[1]",
        "a list of values can only be the second argument of 'in'",
    ),
    "rule too deep": (
        mutated(lambda d: d["segments"][0].update(rule=deep_rule(40))),
        "segments[0].rule",
        "nested too deeply",
    ),
    "rule too large": (
        mutated(
            lambda d: d["segments"][0].update(
                rule={"or": [{"===": [{"var": "email"}, f"p{i}@x.io"]} for i in range(3000)]}
            )
        ),
        "segments[0].rule",
        "too large",
    ),
    "duplicate name": (
        mutated(lambda d: d["segments"][1].update(name=" malaysian vips ")),
        "segments[1].name",
        "duplicate name 'malaysian vips': segments[0] has the same name",
    ),
    "over 500 in the file": (
        mutated(lambda d: d.update(segments=[dict(d["segments"][0], name=f"S{i}") for i in range(501)])),
        "segments",
        "at most 500 segments",
    ),
    "empty segment list": (mutated(lambda d: d.update(segments=[])), "segments", "at least one segment"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_cli_bad_input_exits_2_with_a_clear_message_and_changes_nothing(
    case: str, run: Any, uow: UnitOfWork, engine: Engine, tmp_path: Path
) -> None:
    content, path, words = BAD_INPUT[case]
    create_workspace(uow, A, now=NOW)
    upsert_contacts(uow, A, contacts(10), now=NOW)
    file = tmp_path / "bad.json"
    file.write_bytes(content)
    before = dump(engine)

    for on_conflict in ("skip", "replace"):
        result = run("import", "-w", A, str(file), "--on-conflict", on_conflict)
        assert result.exit_code == 2, result.output
        assert result.stdout == ""
        assert result.stderr.startswith(f"error: {file}: not a valid export: 1 problem\n")
        assert f"\n  {path}: " in result.stderr and words in result.stderr, result.stderr
        assert "Traceback" not in result.output
    assert dump(engine) == before

    result = run("validate", str(file))
    assert result.exit_code == 2
    assert result.stdout.startswith(f"{file}: not a valid export, 1 problem:\n  {path}: ")
    assert words in result.stdout
    checked = json.loads(run("--json", "validate", str(file)).stdout)
    assert checked["valid"] is False and [p["path"] for p in checked["problems"]] == [path]
    assert dump(engine) == before


def test_cli_a_50_mb_file_is_refused_fast(run: Any, uow: UnitOfWork, engine: Engine, tmp_path: Path) -> None:
    create_workspace(uow, A, now=NOW)
    file = tmp_path / "huge.json"
    with file.open("wb") as stream:  # sparse: 50 MB on paper, nothing on disk
        stream.truncate(50 * 1024 * 1024)
    before = dump(engine)
    started = time.perf_counter()
    result = run("import", "-w", A, str(file))
    elapsed = time.perf_counter() - started
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {file}: the file is too large: 52,428,800 bytes, more than the 16 MiB (16,777,216 bytes) "
        "an export may have\n"
    )
    assert elapsed < 2, elapsed
    result = run("validate", str(file))
    assert result.exit_code == 2 and "the file is too large: 52,428,800 bytes" in result.stdout
    assert dump(engine) == before


def test_cli_an_import_that_would_pass_500_exits_2_and_changes_nothing(
    run: Any, uow: UnitOfWork, engine: Engine, tmp_path: Path
) -> None:
    create_workspace(uow, A, now=NOW)  # five defaults
    file = tmp_path / "many.json"
    file.write_text(json.dumps(file_of(*[(f"S{i:03d}", True) for i in range(496)])))
    before = dump(engine)
    assert run("validate", str(file)).exit_code == 0  # a valid file: the workspace is what is full
    result = run("import", "-w", A, str(file))
    assert result.exit_code == 2
    assert result.stderr == (
        "error: importing would create 496 segments in a workspace that has 5: a workspace holds at most 500 "
        "(nothing was imported)\n"
    )
    assert dump(engine) == before


def test_cli_usage_errors(run: Any, uow: UnitOfWork, tmp_path: Path) -> None:
    create_workspace(uow, A, now=NOW)
    result = run("import", "-w", A, str(tmp_path / "missing.json"))
    assert result.exit_code == 2 and "cannot read" in result.stderr
    result = run("import", "-w", A, str(tmp_path / "x.json"), "--on-conflict", "merge")
    assert result.exit_code == 2 and "merge" in result.stderr
    result = run("export", "-w", "nowhere")
    assert result.exit_code == 2 and "no workspace 'nowhere'" in result.stderr


def test_cli_validate_never_opens_a_database(tmp_path: Path) -> None:
    file = tmp_path / "export.json"
    file.write_text(json.dumps(good_document()))
    unreachable = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'segments.db'}"
    result = CliRunner().invoke(
        cli.main, ["--db", unreachable, "validate", str(file)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "a valid export of 2 segments" in result.stdout
    assert not (tmp_path / "no").exists()
    result = CliRunner().invoke(cli.main, ["--db", unreachable, "import", "-w", A, str(file)])
    assert result.exit_code == 2 and "cannot open the database" in result.stderr
