"""The ``segments`` command on SQLite and PostgreSQL: click's CliRunner for every command, and the
real executable in subprocesses (exit codes, no traceback).

Happy paths parse ``--json`` output and compare it with expectations computed independently
(``contact_segments.rules.apply`` over the contacts the test wrote, or the tables read directly).
Every kind of bad input must exit with status 2, print one message naming the problem, and write
nothing: the whole database is compared before and after.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, delete, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from contact_segments.cli import main
from contact_segments.rules import apply
from contact_segments.rules.catalog import STRING_FIELDS, TIMESTAMP_FIELDS
from contact_segments.service import (
    InlineDispatcher,
    RuleInput,
    UnitOfWork,
    create_segment,
    create_workspace,
    upsert_contacts,
)
from contact_segments.storage import Base, Membership, Segment, Workspace, head_revision

NOW = 1_750_000_000.0  # 2025-06-15T15:06:40Z
DAY = 86_400
WS = "acme"
SEGMENTS = str(Path(sys.executable).with_name("segments"))  # the console script of this environment

MALAYSIA_VIP = {"and": [{"==": [{"var": "country"}, "MY"]}, {"in": ["vip", {"var": "tags"}]}]}
VIP = {"in": ["vip", {"var": "tags"}]}
ENVIRONMENT = ("SEGMENTS_DATABASE_URL", "SEGMENTS_BROKER_URL", "SEGMENTS_HOST_PLUGINS")


@pytest.fixture(autouse=True)
def _no_configuration_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Follow-up work inline, on the database the test names."""
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- helpers


def iso(instant: float | None) -> str | None:
    return None if instant is None else datetime.fromtimestamp(instant, UTC).isoformat()


def make_contacts(count: int, *, seed: int = 5, version: int = 1) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    return [
        {
            "id": f"c{number:03d}",
            "version": version,
            "first_name": rng.choice(["Aisyah", "Ben", "Chen", None]),
            "country": rng.choice(["MY", "MY", "SG", None, ""]),
            "language": rng.choice(["en", "ms", None]),
            "tags": rng.sample(["vip", "promotion", "b2b"], rng.randint(0, 2)),
            "channels": rng.sample(["whatsapp", "email"], rng.randint(0, 2)),
            "created_at": iso(NOW - rng.uniform(0, 14 * DAY)),
            "last_incoming_message_at": iso(NOW - rng.uniform(0, 60 * DAY)) if rng.random() < 0.7 else None,
            "last_outgoing_message_at": None,
            "custom_fields": {"plan": rng.choice(["free", "pro"]), "orders": rng.randint(0, 20)},
        }
        for number in range(count)
    ]


def view(document: dict[str, Any]) -> dict[str, Any]:
    """The evaluation view of a snapshot, built here."""
    result: dict[str, Any] = {"id": document["id"], **{name: document.get(name) for name in STRING_FIELDS}}
    result["tags"] = list(document.get("tags") or [])
    result["channels"] = list(document.get("channels") or [])
    result["custom_fields"] = dict(document.get("custom_fields") or {})
    for name in TIMESTAMP_FIELDS:
        value = document.get(name)
        result[name] = None if value is None else datetime.fromisoformat(value).timestamp()
    return result


def matching(rule: Any, documents: list[dict[str, Any]], now: float = NOW) -> list[str]:
    """The sorted ids of the snapshots the rule matches at ``now``, by the reference ``apply``."""
    return sorted(d["id"] for d in documents if apply({"!!": [rule]}, {**view(d), "now": now}) is True)


def jsonl(documents: list[Any]) -> str:
    return "".join(json.dumps(document) + "\n" for document in documents)


def database_state(engine: Engine) -> dict[str, list[str]]:
    """Every row of every table, so "nothing was written" can be checked exactly."""
    with engine.connect() as connection:
        return {
            table.name: sorted(repr(tuple(row)) for row in connection.execute(select(table)))
            for table in Base.metadata.sorted_tables
        }


class Cli:
    """Runs ``segments --db URL [--json] [--now T] ARGS`` in-process."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.runner = CliRunner()

    def run(self, *args: str, input: str | None = None, as_json: bool = True, now: float | str | None = NOW) -> Result:
        argv = ["--db", self.db_url, *(["--json"] if as_json else []), *(["--now", str(now)] if now is not None else [])]
        return self.runner.invoke(main, [*argv, *args], input=input)

    def ok(self, *args: str, **options: Any) -> Any:
        """Run; expect success; return the parsed JSON output."""
        result = self.run(*args, **options)
        assert result.exit_code == 0, (result.output, result.exception)
        assert "Traceback" not in result.stderr
        return json.loads(result.stdout) if options.get("as_json", True) else result.stdout

    def fails(self, *args: str, **options: Any) -> str:
        """Run; expect a user error: status 2, one message on stderr, nothing on stdout."""
        result = self.run(*args, **options)
        assert result.exit_code == 2, (result.output, result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert result.stdout == ""
        assert "Traceback" not in result.stderr
        lines = result.stderr.rstrip("\n").splitlines()
        assert lines[0].startswith("error: "), result.stderr
        assert sum(line.startswith("error") for line in lines) == 1, result.stderr  # one message (with details)
        return result.stderr


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    from contact_segments.storage import make_session_factory

    return make_session_factory(engine)


@pytest.fixture
def uow(factory: sessionmaker[Session]) -> UnitOfWork:
    return UnitOfWork(factory, InlineDispatcher(factory, clock=lambda: NOW))


def members(engine: Engine, segment_id: int) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.scalars(select(Membership.contact_id).where(Membership.segment_id == segment_id)))


# --------------------------------------------------------------------------- happy paths


def test_every_command_with_json_output(cli: Cli, engine: Engine, tmp_path: Path) -> None:
    assert cli.ok("init") == {"database": engine.url.render_as_string(hide_password=True), "revision": head_revision()}

    created = cli.ok("workspace", "create", WS, "--name", "Acme Inc", "--timezone", "Asia/Kuala_Lumpur")
    assert (created["id"], created["name"], created["timezone"], created["segment_count"]) == (
        WS, "Acme Inc", "Asia/Kuala_Lumpur", 5,
    )  # fmt: skip
    assert cli.ok("workspace", "create", WS)["segment_count"] == 5  # idempotent
    assert [w["id"] for w in cli.ok("workspace", "list")] == [WS]

    contacts = make_contacts(30)
    source = tmp_path / "contacts.jsonl"
    source.write_text(jsonl(contacts[:29]) + "\n")  # a blank line is fine
    assert cli.ok("contacts", "upsert", "-w", WS, str(source)) == {"received": 29, "stored": 29}
    assert cli.ok("contacts", "upsert", "-w", WS, "-", input=jsonl(contacts[29:])) == {"received": 1, "stored": 1}
    assert cli.ok("contacts", "upsert", "-w", WS, str(source)) == {"received": 29, "stored": 0}  # duplicates

    listed = cli.ok("segment", "list", "-w", WS)
    assert [s["name"] for s in listed] == [
        "Contacts created <7 days ago", "Contacts inactive >30 days", "Contacts with tags", "Country known", "Language known",
    ]  # fmt: skip
    for item in listed:
        assert {"id", "name", "rule", "conditions", "filter_count", "member_count", "is_default"} <= item.keys()
        assert item["is_default"] and item["filter_count"] == 1
        assert item["member_count"] == len(matching(item["rule"], contacts))

    expected = matching(MALAYSIA_VIP, contacts)
    assert 0 < len(expected) < len(contacts)
    assert cli.ok("segment", "create", "-w", WS, "--name", "x", "--rule", json.dumps(MALAYSIA_VIP), "--dry-run") == {
        "member_count": len(expected)
    }
    segment = cli.ok("segment", "create", "-w", WS, "--name", "Malaysian VIPs", "--rule", json.dumps(MALAYSIA_VIP))
    assert (segment["name"], segment["rule"], segment["filter_count"], segment["member_count"]) == (
        "Malaysian VIPs", MALAYSIA_VIP, 2, len(expected),
    )  # fmt: skip
    assert segment["conditions"]["op"] == "and" and len(segment["conditions"]["conditions"]) == 2
    sid = str(segment["id"])
    assert cli.ok("segment", "members", "-w", WS, sid) == expected
    assert cli.ok("segment", "members", "-w", WS, sid, as_json=False).split() == expected

    conditions = tmp_path / "conditions.json"
    conditions.write_text(json.dumps({"op": "or", "conditions": [
        {"category": "contact_field", "field": "custom_fields.plan", "operator": "is_equal_to", "value": "pro"},
        {"category": "channel", "operator": "has_any_of", "value": ["whatsapp"]},
    ]}))  # fmt: skip
    from_file = cli.ok("segment", "create", "-w", WS, "--name", "Pro or WhatsApp", "--conditions", f"@{conditions}")
    pro_or_whatsapp = sorted(
        c["id"] for c in contacts if c["custom_fields"]["plan"] == "pro" or "whatsapp" in c["channels"]
    )
    assert from_file["member_count"] == len(pro_or_whatsapp) and from_file["filter_count"] == 2
    assert cli.ok("segment", "members", "-w", WS, str(from_file["id"])) == pro_or_whatsapp

    member, outsider = expected[0], next(c["id"] for c in contacts if c["id"] not in expected)
    report = cli.ok("segment", "explain", "-w", WS, sid, member)
    assert (report["matches"], report["member"], report["segment"]) == (True, True, "Malaysian VIPs")
    assert report["fields"] == {"country": "MY", "tags": next(c["tags"] for c in contacts if c["id"] == member)}
    assert report["tree"]["op"] == "and" and report["tree"]["value"] is True
    report = cli.ok("segment", "explain", "-w", WS, sid, outsider)
    assert (report["matches"], report["member"]) == (False, False)
    text_report = cli.ok("segment", "explain", "-w", WS, sid, member, as_json=False)
    assert f"contact {member} matches segment" in text_report and "var country = \"MY\"" in text_report

    # Edit: preview, then the real thing, then save as new.
    vip = matching(VIP, contacts)
    preview = cli.ok("segment", "edit", "-w", WS, sid, "--rule", json.dumps(VIP), "--dry-run")
    assert preview == {
        "member_count": len(vip),
        "would_enter": len(set(vip) - set(expected)),
        "would_exit": len(set(expected) - set(vip)),
    }
    events_before = cli.ok("events", "-w", WS)
    edited = cli.ok("segment", "edit", "-w", WS, sid, "--rule", json.dumps(VIP))
    assert (edited["id"], edited["rule_version"], edited["member_count"]) == (segment["id"], 2, len(vip))
    new_events = cli.ok("events", "-w", WS, "--after", events_before[-1]["event_id"])
    assert sorted((e["kind"], e["contact_id"]) for e in new_events) == sorted(
        [("entered", c) for c in set(vip) - set(expected)] + [("exited", c) for c in set(expected) - set(vip)]
    )
    assert {(e["segment_id"], e["cause"], e["rule_version"]) for e in new_events} == {(segment["id"], "rule_edited", 2)}
    assert len({e["event_id"] for e in cli.ok("events", "-w", WS)}) == len(events_before) + len(new_events)

    copy = cli.ok("segment", "edit", "-w", WS, sid, "--rule", json.dumps(MALAYSIA_VIP), "--save-as", "MY VIP copy")
    assert copy["id"] != segment["id"] and copy["member_count"] == len(expected)
    assert cli.ok("segment", "members", "-w", WS, sid) == vip  # the original is untouched

    renamed = cli.ok("segment", "rename", "-w", WS, sid, "  VIPs  ")
    assert (renamed["id"], renamed["name"], renamed["rule_version"]) == (segment["id"], "VIPs", 2)

    # Contacts: delete one; it leaves every segment it was in.
    victim = vip[0]
    was_in = [s["id"] for s in cli.ok("segment", "list", "-w", WS) if victim in members(engine, s["id"])]
    assert len(was_in) >= 2
    assert cli.ok("contacts", "delete", "-w", WS, victim) == {"deleted": victim, "exited": len(was_in)}
    assert not any(victim in members(engine, s) for s in was_in)

    # Recompute: nothing has drifted; then repair a membership removed behind the service's back.
    assert all((r["entered"], r["exited"]) == (0, 0) for r in cli.ok("recompute", "-w", WS))
    with engine.begin() as connection:
        connection.execute(delete(Membership).where(Membership.segment_id == segment["id"], Membership.contact_id == vip[1]))
    # --incremental compares only the contacts changed since the last build: a lost membership is not a change.
    assert cli.ok("recompute", "-w", WS, "--segment", sid, "--incremental") == [
        {"segment_id": segment["id"], "entered": 0, "exited": 0, "member_count": len(vip) - 2}
    ]
    assert cli.ok("recompute", "-w", WS, "--segment", sid) == [
        {"segment_id": segment["id"], "entered": 1, "exited": 0, "member_count": len(vip) - 1}
    ]
    assert cli.ok("segment", "members", "-w", WS, sid) == vip[1:]

    # Time: eight days on (ISO-8601 --now), everyone leaves "Contacts created <7 days ago".
    recent = next(s for s in listed if s["name"] == "Contacts created <7 days ago")
    still_recent = [c for c in matching(recent["rule"], contacts) if c != victim]
    later = iso(NOW + 8 * DAY)
    ticked = cli.ok("tick", "-w", WS, now=later)
    assert (ticked["from"], ticked["to"], ticked["exited"], ticked["skipped"]) == (NOW, NOW + 8 * DAY, len(still_recent), False)
    assert members(engine, recent["id"]) == []
    assert cli.ok("tick", "-w", WS, now=later)["skipped"] is True

    assert cli.ok("segment", "delete", "-w", WS, sid) == {"deleted": sid}
    assert segment["id"] not in [s["id"] for s in cli.ok("segment", "list", "-w", WS)]
    assert members(engine, segment["id"]) == []


def test_text_output_without_json(cli: Cli, uow: UnitOfWork) -> None:
    create_workspace(uow, WS, now=NOW)
    upsert_contacts(uow, WS, make_contacts(10), now=NOW)
    listing = cli.ok("segment", "list", "-w", WS, as_json=False)
    assert "Country known" in listing and "Contacts created <7 days ago" in listing
    assert "entered" in cli.ok("events", "-w", WS, as_json=False)
    assert "workspace acme" in cli.ok("workspace", "create", WS, as_json=False)
    assert cli.ok("tick", "-w", WS, as_json=False, now=NOW + 60).startswith("tick: ")


# --------------------------------------------------------------------------- bad input


@pytest.fixture
def prepared(factory: sessionmaker[Session], tmp_path: Path) -> dict[str, Any]:
    """A workspace with contacts and a segment of its own, for the bad-input cases to bounce off
    (follow-up work left undone: no member is needed to be refused)."""
    uow = UnitOfWork(factory)
    create_workspace(uow, WS, now=NOW)
    upsert_contacts(uow, WS, make_contacts(10), now=NOW)
    segment = create_segment(uow, WS, name="VIP", rule=RuleInput(rule=VIP), now=NOW)
    good = make_contacts(3, seed=9, version=5)
    files = {
        "malformed.jsonl": jsonl(good[:2]) + '{"id": "c900", "version": 1,\n' + jsonl(good[2:]),
        "bad-timestamp.jsonl": jsonl(good[:1]) + json.dumps({"id": "c901", "version": 1, "created_at": "yesterday"}) + "\n",
        "no-offset.jsonl": json.dumps({"id": "c902", "version": 1, "created_at": "2026-01-01T00:00:00"}) + "\n",
        "unknown-field.jsonl": json.dumps({"id": "c903", "version": 1, "favourite_colour": "teal"}) + "\n",
        "string-version.jsonl": jsonl(good) + json.dumps({"id": "c904", "version": "1"}) + "\n",
        "not-an-object.jsonl": jsonl(good[:1]) + "[1, 2]\n",
        "good.jsonl": jsonl(good),
        "bad-rule.json": '{"==": [{"var": "country"}, "MY"]',
    }
    for name, content in files.items():
        (tmp_path / name).write_text(content)
    return {"segment": str(segment.id), "dir": tmp_path}


BAD_INPUT = [
    # (case id, arguments ({segment}, {dir} filled in), what the message must say)
    ("rule-not-json", ["segment", "create", "-w", WS, "--name", "N", "--rule", '{"==": ['], ["the rule is not valid JSON"]),
    ("rule-file-not-json", ["segment", "create", "-w", WS, "--name", "N", "--rule", "@{dir}/bad-rule.json"], ["not valid JSON"]),
    ("rule-file-missing", ["segment", "create", "-w", WS, "--name", "N", "--rule", "@{dir}/nope.json"], ["cannot read the rule"]),
    ("unknown-field", ["segment", "create", "-w", WS, "--name", "N", "--rule", '{"==": [{"var": "nope"}, 1]}'],
     ["invalid segment rule", "$.==[0].var", "nope"]),
    ("unknown-field-in-edit", ["segment", "edit", "-w", WS, "{segment}", "--rule", '{"!!": [{"var": "custom_fields.__proto__"}]}'],
     ["invalid segment rule", "custom_fields.__proto__"]),
    ("not-a-segment-rule", ["segment", "create", "-w", WS, "--name", "N", "--rule", '{"cat": ["a", {"var": "country"}]}'],
     ["invalid segment rule", "cat"]),
    ("bad-conditions", ["segment", "create", "-w", WS, "--name", "N", "--conditions",
                        '{"op": "and", "conditions": [{"category": "contact_tag", "operator": "is_between", "value": 1}]}'],
     ["invalid segment rule"]),
    ("rule-and-conditions", ["segment", "create", "-w", WS, "--name", "N", "--rule", "true", "--conditions", "{}"], ["not both"]),
    ("no-rule", ["segment", "create", "-w", WS, "--name", "N"], ["either a JSONLogic rule or conditions"]),
    ("edit-without-rule", ["segment", "edit", "-w", WS, "{segment}"], ["give --rule or --conditions"]),
    ("unknown-workspace-list", ["segment", "list", "-w", "nope"], ["no workspace 'nope'"]),
    ("unknown-workspace-create", ["segment", "create", "-w", "nope", "--name", "N", "--rule", "true"], ["no workspace 'nope'"]),
    ("unknown-workspace-upsert", ["contacts", "upsert", "-w", "nope", "{dir}/good.jsonl"], ["no workspace 'nope'"]),
    ("unknown-workspace-events", ["events", "-w", "nope"], ["no workspace 'nope'"]),
    ("unknown-workspace-tick", ["tick", "-w", "nope"], ["no workspace 'nope'"]),
    ("unknown-workspace-recompute", ["recompute", "-w", "nope"], ["no workspace 'nope'"]),
    ("unknown-segment-edit", ["segment", "edit", "-w", WS, "999999", "--rule", "true"], ["no segment '999999'"]),
    ("unknown-segment-save-as", ["segment", "edit", "-w", WS, "999999", "--save-as", "Copy"], ["no segment '999999'"]),
    ("unknown-segment-rename", ["segment", "rename", "-w", WS, "999999", "New"], ["no segment '999999'"]),
    ("unknown-segment-delete", ["segment", "delete", "-w", WS, "999999"], ["no segment '999999'"]),
    ("unknown-segment-members", ["segment", "members", "-w", WS, "999999"], ["no segment '999999'"]),
    ("unknown-segment-explain", ["segment", "explain", "-w", WS, "abc", "c001"], ["no segment 'abc'"]),
    ("unknown-segment-recompute", ["recompute", "-w", WS, "--segment", "999999"], ["no segment '999999'"]),
    ("unknown-contact-explain", ["segment", "explain", "-w", WS, "{segment}", "nobody"], ["no contact 'nobody'"]),
    ("unknown-contact-delete", ["contacts", "delete", "-w", WS, "nobody"], ["no contact 'nobody'"]),
    ("unknown-event", ["events", "-w", WS, "--after", "not-an-event"], ["no event 'not-an-event'"]),
    ("duplicate-name-create", ["segment", "create", "-w", WS, "--name", " country KNOWN ", "--rule", "true"],
     ["a segment named 'country KNOWN' already exists"]),
    ("duplicate-name-rename", ["segment", "rename", "-w", WS, "{segment}", "LANGUAGE known"], ["already exists"]),
    ("duplicate-name-save-as", ["segment", "edit", "-w", WS, "{segment}", "--save-as", "vip"], ["already exists"]),
    ("bad-name", ["segment", "create", "-w", WS, "--name", "   ", "--rule", "true"], ["must not be empty"]),
    ("malformed-json-line", ["contacts", "upsert", "-w", WS, "{dir}/malformed.jsonl"], ["line 3", "not valid JSON"]),
    ("malformed-json-stdin", ["contacts", "upsert", "-w", WS, "-"], ["line 2", "not valid JSON"]),
    ("bad-snapshot-timestamp", ["contacts", "upsert", "-w", WS, "{dir}/bad-timestamp.jsonl"],
     ["line 2", "c901", "created_at", "'yesterday' is not an ISO-8601 timestamp"]),
    ("bad-snapshot-no-offset", ["contacts", "upsert", "-w", WS, "{dir}/no-offset.jsonl"], ["line 1", "created_at", "no zone offset"]),
    ("bad-snapshot-unknown-field", ["contacts", "upsert", "-w", WS, "{dir}/unknown-field.jsonl"], ["line 1", "favourite_colour"]),
    ("bad-snapshot-version", ["contacts", "upsert", "-w", WS, "{dir}/string-version.jsonl"], ["line 4", "version"]),
    ("bad-snapshot-not-object", ["contacts", "upsert", "-w", WS, "{dir}/not-an-object.jsonl"], ["line 2", "JSON object"]),
    ("bad-timezone", ["workspace", "create", "w2", "--timezone", "Mars/Olympus_Mons"], ["unknown time zone"]),
]  # fmt: skip


@pytest.mark.parametrize(("arguments", "says"), [pytest.param(a, s, id=i) for i, a, s in BAD_INPUT])
def test_bad_input_exits_2_with_one_message_and_writes_nothing(
    cli: Cli, engine: Engine, prepared: dict[str, Any], arguments: list[str], says: list[str]
) -> None:
    filled = [a.replace("{segment}", prepared["segment"]).replace("{dir}", str(prepared["dir"])) for a in arguments]
    stdin = jsonl(make_contacts(1, seed=4, version=7)) + "{nope\n" if filled[-1] == "-" else None
    before = database_state(engine)
    message = cli.fails(*filled, input=stdin)
    for fragment in says:
        assert fragment in message, message
    assert database_state(engine) == before


def test_limit_reached_exits_2_and_writes_nothing(cli: Cli, engine: Engine, uow: UnitOfWork) -> None:
    create_workspace(uow, WS, now=NOW)
    with engine.begin() as connection:  # 495 more, as the service stores them (one by one would take seconds)
        connection.execute(
            Segment.__table__.insert(),
            [{"workspace_id": WS, "name": f"s{n}", "name_key": f"s{n}", "rule": VIP, "created_at": NOW, "updated_at": NOW}
             for n in range(495)],
        )  # fmt: skip
        connection.execute(update(Workspace).where(Workspace.id == WS).values(segment_count=500))
    before = database_state(engine)
    message = cli.fails("segment", "create", "-w", WS, "--name", "one too many", "--rule", json.dumps(VIP))
    assert "already has 500 segments" in message
    assert "500" in cli.fails("segment", "edit", "-w", WS, "1", "--save-as", "a copy")
    assert database_state(engine) == before


def test_a_bad_now_or_database_is_a_user_error(cli: Cli, tmp_path: Path, blank_db_url: str) -> None:
    result = cli.run("--now", "yesterday", "segment", "list", "-w", WS, now=None)
    assert result.exit_code == 2 and "yesterday" in result.stderr and "Traceback" not in result.stderr
    result = cli.run("--now", "2026-01-01T00:00:00", "segment", "list", "-w", WS, now=None)
    assert result.exit_code == 2 and "no zone offset" in result.stderr

    for url, says in [
        ("not a url", "not a usable database URL"),
        ("bogus://x/y", "not a usable database URL"),
        (f"sqlite:///{tmp_path}/no/such/dir/x.db", "cannot open the database"),
        ("postgresql://postgres@127.0.0.1:1/test", "cannot open the database"),
        (blank_db_url, "run `segments init` first"),
    ]:
        message = Cli(url).fails("segment", "list", "-w", WS)
        assert says in message, message
    assert "revision" in Cli(blank_db_url).ok("init")
    assert Cli(blank_db_url).ok("workspace", "list") == []


# --------------------------------------------------------------------------- the demo


def test_demo_round(cli: Cli, engine: Engine, factory: sessionmaker[Session]) -> None:
    output = cli.ok("demo", "--contacts", "400", as_json=False, now=NOW)
    assert "workspace 'demo' created with 5 default segments" in output
    assert "400 contacts upserted" in output
    assert "entered segment" in output and "exited 'Contacts created <7 days ago'" in output
    assert "Traceback" not in output

    # Every membership is what the reference evaluation of the stored contacts says, 8 days on.
    later = NOW + 8 * DAY
    from contact_segments.storage import load_contact_views

    with factory() as session:
        segments = session.scalars(select(Segment).where(Segment.workspace_id == "demo").order_by(Segment.id)).all()
        assert [s.name for s in segments][-1] == "Malaysia promotion" and len(segments) == 6
        contact_ids = list(session.scalars(text("SELECT id FROM contacts WHERE workspace_id = 'demo'")))
        views = load_contact_views(session, "demo", contact_ids)
    assert len(views) == 400
    for segment in segments:
        expected = sorted(c for c, v in views.items() if apply({"!!": [segment.rule]}, {**v, "now": later}) is True)
        assert members(engine, segment.id) == expected, segment.name

    again = cli.ok("demo", "--contacts", "200", as_json=False, now=NOW)  # starts over
    assert "200 contacts upserted" in again


# --------------------------------------------------------------------------- the real executable


def run_segments(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if name not in ENVIRONMENT}
    return subprocess.run([SEGMENTS, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_segments_executable(db_url: str, engine: Engine, tmp_path: Path) -> None:
    db = ["--db", db_url, "--now", str(NOW)]
    done = run_segments(*db, "--json", "workspace", "create", WS, cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    assert json.loads(done.stdout)["segment_count"] == 5

    contacts = make_contacts(20)
    (tmp_path / "contacts.jsonl").write_text(jsonl(contacts))
    done = run_segments(*db, "--json", "contacts", "upsert", "-w", WS, "contacts.jsonl", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"received": 20, "stored": 20}

    done = run_segments(*db, "--json", "segment", "create", "-w", WS, "--name", "MY VIP", "--rule", json.dumps(MALAYSIA_VIP), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    segment_id = str(json.loads(done.stdout)["id"])
    done = run_segments(*db, "segment", "members", "-w", WS, segment_id, cwd=tmp_path)
    assert (done.returncode, done.stdout.split()) == (0, matching(MALAYSIA_VIP, contacts))

    before = database_state(engine)
    (tmp_path / "broken.jsonl").write_text(jsonl(make_contacts(2, version=9)) + "not json\n")
    for args, says in [
        (["contacts", "upsert", "-w", WS, "broken.jsonl"], "line 3: not valid JSON"),
        (["segment", "create", "-w", WS, "--name", "my vip", "--rule", "true"], "already exists"),
        (["segment", "list", "-w", "nope"], "no workspace 'nope'"),
    ]:
        done = run_segments(*db, *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stdout == "" and "Traceback" not in done.stderr
        assert done.stderr.startswith("error: ") and says in done.stderr and done.stderr.count("error") == 1
    assert database_state(engine) == before


def test_the_demo_with_its_defaults_in_a_subprocess(tmp_path: Path) -> None:
    """``segments demo`` as a new user runs it: the embedded default, 10,000 contacts, ~10 s."""
    started = time.monotonic()
    done = run_segments("demo", cwd=tmp_path, timeout=300)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "10,000 contacts upserted" in done.stdout
    assert "exited 'Contacts created <7 days ago'" in done.stdout
    assert (tmp_path / "segments.db").exists()  # the embedded default, in the working directory
    listed = run_segments("--json", "segment", "list", "-w", "demo", cwd=tmp_path)
    assert listed.returncode == 0 and len(json.loads(listed.stdout)) == 6
    assert elapsed < 60, f"the demo took {elapsed:.1f} s"
