"""Hostile input: every document of the corpus in ``tests/data/hostile/`` is refused.

Each bad rule, snapshot file and import file (see ``tests/data/hostile/generate.py``) goes

- through the command line (click's ``CliRunner``, and a real subprocess for the worst cases):
  exit status 2, a message containing the case's fragment, no traceback;
- through the service (``create_segment``, ``upsert_contacts``, ``import_segments``) and the
  validators (``validate_segment_rule``, the strict JSON parser, ``load_snapshot``,
  ``check_export``): the documented error, with the same message;

and on SQLite and on PostgreSQL every row of every table is the same afterwards as before.

Timings are measured and reported, never asserted (they depend on the machine).  Memory is
asserted: the peak resident set of a ``segments`` process refusing a 50 MB or million-element
document stays under :data:`PEAK_RSS_BOUND_MB` (see there why).  The figures (documents refused,
median and maximum time, peak memory) are printed at the end of the module, and written as JSON
under the key ``"hostile_input"`` of the file ``$SEGMENTS_RELIABILITY_REPORT`` when it is set.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, inspect, text

from contact_segments import service
from contact_segments.cli import main
from contact_segments.rules import jsontext
from contact_segments.rules.validation import RuleValidationError, validate_segment_rule
from contact_segments.service import InvalidInput, RuleInput, UnitOfWork
from contact_segments.storage import make_engine, make_session_factory, migrate
from tests.conftest import BACKENDS, _postgres_schema

REPO = Path(__file__).resolve().parents[2]
HOSTILE = REPO / "tests" / "data" / "hostile"
REPORT_ENV = "SEGMENTS_RELIABILITY_REPORT"
NOW = 1_770_000_000.0
WS = "w-hostile"

#: The bound on a ``segments`` process's peak resident set while it refuses any document of the
#: corpus, the 50 MB and million-element ones included.  Its parts: the interpreter with its
#: libraries (SQLAlchemy, Celery, Marshmallow, rich) takes ~70 MB before reading anything
#: (measured: ``baseline_rss_mb`` in the report); a 50 MB document is then held at most three
#: times at once (the file's bytes, the decoded text, the parsed string: 150 MB, ~220 MB in all,
#: measured); a million-element array parses to ~30-80 MB of Python objects.  300 MB leaves
#: ~80 MB of slack above the worst, and fails any per-item blow-up (a million error messages, a
#: copy per level of nesting, a fourth copy of the input) or a leak.
PEAK_RSS_BOUND_MB = 300
#: The bound for an export file of a million tiny object members (13 MB of ``"123": 0``), which an
#: import must parse before it can tell that they are unknown fields (an export may be 16 MiB, and
#: has up to a million values when valid): while it is parsed, each member is a key string, a
#: key/value tuple and a slot of the parser's key memo, ~230 bytes, so 230 MB on top of the
#: baseline and twice the text.  (A snapshot line like it is refused by its count of commas,
#: before it is parsed; a rule, by its size.)
MEMBER_DENSE_BOUND_MB = 400


def _load_generator() -> Any:
    spec = importlib.util.spec_from_file_location("hostile_generate", HOSTILE / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


generate = _load_generator()
CASES: list[dict[str, Any]] = generate.load_manifest()
case_id: Callable[[dict[str, Any]], str] = generate.case_id


def by_family(family: str) -> list[dict[str, Any]]:
    return [case for case in CASES if case["family"] == family]


# --------------------------------------------------------------------------- figures


class Figures:
    """What the module measured, reported when it ends."""

    def __init__(self) -> None:
        self.seconds: dict[str, list[float]] = defaultdict(list)
        self.refused: dict[str, set[str]] = defaultdict(set)
        self.peak_rss_mb: dict[str, float] = {}
        self.slowest: dict[str, tuple[float, str]] = {}

    def record(self, path: str, case: dict[str, Any], seconds: float) -> None:
        self.seconds[path].append(seconds)
        self.refused[path].add(case_id(case))
        if seconds > self.slowest.get(path, (0.0, ""))[0]:
            self.slowest[path] = (seconds, case_id(case))

    def summary(self) -> dict[str, Any]:
        every_path = set().union(*self.refused.values()) if self.refused else set()
        counts = {family: len(by_family(family)) for family in generate.FAMILIES}
        return {
            "corpus_documents": len(CASES),
            "corpus_by_family": counts,
            "documents_refused": len(every_path),
            "refused_by_path": {path: len(ids) for path, ids in sorted(self.refused.items())},
            "seconds": {
                path: {
                    "runs": len(times),
                    "median": round(statistics.median(times), 4),
                    "max": round(max(times), 4),
                    "slowest": self.slowest[path][1],
                }
                for path, times in sorted(self.seconds.items())
            },
            "peak_rss_mb": dict(sorted(self.peak_rss_mb.items())),
            "peak_rss_bound_mb": PEAK_RSS_BOUND_MB,
            "peak_rss_bound_mb_member_dense_import": MEMBER_DENSE_BOUND_MB,
        }


FIGURES = Figures()


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if not FIGURES.seconds:
        return
    summary = FIGURES.summary()
    target = os.environ.get(REPORT_ENV)
    if target:
        path = Path(target)
        try:
            report = json.loads(path.read_text("utf-8")) if path.exists() else {}
        except ValueError:
            report = {}
        report = report if isinstance(report, dict) else {}
        report["hostile_input"] = summary
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", "utf-8")
        partial.replace(path)
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            reporter.write_line("hostile input: " + json.dumps(summary, sort_keys=True))


# --------------------------------------------------------------------------- documents


@pytest.fixture(scope="session")
def generated_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the huge documents are written (once per session)."""
    return tmp_path_factory.mktemp("hostile")


def document(case: dict[str, Any], directory: Path) -> Path:
    return Path(generate.materialise(case, directory))


def parsed(data: bytes) -> Any:
    """The document as a JSON value, for the cases refused as values (they parse strictly)."""
    return jsontext.loads(jsontext.decode(data))


def snapshot_lines(data: bytes) -> Iterator[Any]:
    """The documents of a JSON Lines file, parsed (strictly) as they are read, so a refusal at
    line 1 does not wait for a million more lines."""
    return (jsontext.loads(jsontext.decode(line)) for line in data.split(b"\n") if line.strip(b" \t\r"))


def expected(case: dict[str, Any], *, value: bool = False) -> str:
    return case.get("expect_value", case["expect"]) if value else case["expect"]


def service_fragment(case: dict[str, Any]) -> str:
    """The fragment as the service says it: it names the n-th snapshot where the CLI names a line
    (the corpus has no blank lines before a bad one, so the numbers agree)."""
    return re.sub(r"^line (\d+): ", r"snapshot #\1: ", expected(case, value=True))


def refuses(fragment: str, message: str, what: str) -> None:
    assert fragment in message, f"{what}: expected {fragment!r} in the message, got:\n{message[:2000]}"
    assert "Traceback" not in message, f"{what}: a traceback:\n{message[:2000]}"


def render(messages: dict[str, Any]) -> str:
    return "\n".join(f"{path}: {message}" for path, message in messages.items())


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="module", params=BACKENDS)
def hostile_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated database with a workspace, contacts, segments, memberships and events: the
    state every hostile document must leave exactly as it is.  Shared by the module's tests
    (they write nothing; each checks)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('hostile-db') / 'segments.db'}"
        yield _seeded(url)
        return
    with _postgres_schema(request.getfixturevalue("postgres_url")) as url:
        yield _seeded(url)


def _seeded(url: str) -> str:
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    runner = CliRunner(env={"SEGMENTS_BROKER_URL": None})
    contacts = "".join(
        json.dumps({"id": f"c-{n}", "version": 1, "country": ["MY", "SG"][n % 2], "tags": ["promotion"] * (n % 3 > 0),
                    "created_at": "2026-01-20T00:00:00+00:00", "custom_fields": {"score": n}}) + "\n"
        for n in range(12)
    )
    for args, stdin in [
        (["workspace", "create", WS], None),
        (["contacts", "upsert", "-w", WS, "-"], contacts),
        (["segment", "create", "-w", WS, "--name", "Promotion MY", "--rule", json.dumps(generate.RULE)], None),
    ]:
        result = runner.invoke(main, ["--db", url, "--now", str(NOW), *args], input=stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        assert result.exit_code == 0, result.output
    return url


@pytest.fixture(scope="module")
def hostile_engine(hostile_db: str) -> Iterator[Engine]:
    engine = make_engine(hostile_db)
    yield engine
    engine.dispose()


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table (the migration's version included), in a stable order."""
    with engine.connect() as connection:
        tables = sorted(inspect(connection).get_table_names())
        return {
            table: sorted((tuple(row) for row in connection.execute(text(f'SELECT * FROM "{table}"'))), key=repr)
            for table in tables
        }


@pytest.fixture
def unchanged(hostile_engine: Engine) -> Iterator[None]:
    """Fails the test if any row of any table changed."""
    before = dump(hostile_engine)
    assert before["segments"] and before["contacts"] and before["memberships"] and before["membership_events"]
    yield
    after = dump(hostile_engine)
    changed = {table for table in before.keys() | after.keys() if before.get(table) != after.get(table)}
    assert not changed, f"hostile input wrote to {sorted(changed)}"


@pytest.fixture
def uow(hostile_engine: Engine) -> UnitOfWork:
    factory = make_session_factory(hostile_engine)
    return UnitOfWork(factory, service.InlineDispatcher(factory, clock=lambda: NOW))


# --------------------------------------------------------------------------- the command line

#: The commands that read each family's documents (``{file}`` is the document's path).
COMMANDS: dict[str, list[list[str]]] = {
    "rules": [["segment", "create", "-w", WS, "--name", "hostile probe", "--rule", "@{file}"]],
    "snapshots": [["contacts", "upsert", "-w", WS, "{file}"]],
    "imports": [["validate", "{file}"], ["import", "-w", WS, "--on-conflict", "replace", "{file}"]],
}


def import_commands_missing() -> str | None:
    """Why the import-file cases cannot run through the CLI (``None``: they can)."""
    result = CliRunner().invoke(main, ["validate", "--help"])
    if result.exit_code != 0:
        return "`segments validate` does not exist yet (issue 5): the import-file cases run once it does"
    result = CliRunner().invoke(main, ["import", "--help"])
    if result.exit_code != 0:
        return "`segments import` does not exist yet (issue 5): the import-file cases run once it does"
    return None


def invoke(db_url: str, args: list[str]) -> tuple[Result, float]:
    runner = CliRunner(env={"SEGMENTS_BROKER_URL": None})
    started = time.perf_counter()
    result = runner.invoke(main, ["--db", db_url, "--now", str(NOW), *args])
    return result, time.perf_counter() - started


def check_cli(case: dict[str, Any], result: Result, command: str) -> None:
    what = f"{case_id(case)} via `segments {command}`"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{what}: an unexpected {type(result.exception).__name__}") from result.exception
    assert result.exit_code == 2, f"{what}: exit status {result.exit_code}, output:\n{result.output[:2000]}"
    refuses(case["expect"], result.output, what)
    lines = result.output.strip().splitlines()
    assert len(result.output) < 20_000, f"{what}: a message of {len(result.output):,} characters"
    assert all(line.isprintable() for line in lines), f"{what}: control characters reach the terminal: {lines!r}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_cli_refuses_it_and_writes_nothing(
    case: dict[str, Any], hostile_db: str, generated_dir: Path, unchanged: None
) -> None:
    if case["family"] == "imports" and (reason := import_commands_missing()):
        pytest.skip(reason)
    path = document(case, generated_dir)
    for command in COMMANDS[case["family"]]:
        args = [arg.format(file=path) for arg in command]
        result, seconds = invoke(hostile_db, args)
        check_cli(case, result, command[0] if command[0] != "segment" else "segment create")
        FIGURES.record(f"cli {command[0]}", case, seconds)


# --------------------------------------------------------------------------- the service


@pytest.mark.parametrize("case", [c for c in CASES if c["level"] != "cli"], ids=case_id)
def test_the_service_refuses_it_and_writes_nothing(
    case: dict[str, Any], generated_dir: Path, uow: UnitOfWork, unchanged: None
) -> None:
    data = document(case, generated_dir).read_bytes()
    family = case["family"]
    calls: list[tuple[str, Callable[[], Any], str]] = []
    if family == "rules":
        calls.append(("create_segment(text)", lambda: service.create_segment(
            uow, WS, name="hostile probe", rule=RuleInput(rule=data), now=NOW), case["expect"]))
        if case["level"] == "value":
            value = parsed(data)
            calls.append(("create_segment(value)", lambda: service.create_segment(
                uow, WS, name="hostile probe", rule=RuleInput(rule=value), now=NOW), expected(case, value=True)))
    elif family == "snapshots":
        if case["level"] != "value":
            pytest.skip("the service takes parsed snapshots: this document is refused as text (see the validator test)")
        documents = list(snapshot_lines(data))  # parsed here: the service takes parsed snapshots
        calls.append(("upsert_contacts", lambda: service.upsert_contacts(uow, WS, documents, now=NOW),
                      service_fragment(case)))
    else:
        import_segments = getattr(service, "import_segments", None)
        if import_segments is None:
            pytest.skip("service.import_segments does not exist yet (issue 5)")
        calls.append(("import_segments(bytes)", lambda: import_segments(
            uow, WS, data, on_conflict="replace", now=NOW), case["expect"]))
        if case["level"] == "value":
            value = parsed(data)
            calls.append(("import_segments(value)", lambda: import_segments(
                uow, WS, value, on_conflict="replace", now=NOW), expected(case, value=True)))
    for name, call, fragment in calls:
        started = time.perf_counter()
        with pytest.raises(InvalidInput) as caught:
            call()
        FIGURES.record(f"service {name.split('(')[0]}", case, time.perf_counter() - started)
        refuses(fragment, str(caught.value), f"{case_id(case)} via {name}")


# --------------------------------------------------------------------------- the validators


def _validate_rule(case: dict[str, Any], data: bytes) -> list[tuple[str, str, str]]:
    results = []
    with pytest.raises(RuleValidationError) as caught:
        validate_segment_rule(data)
    results.append(("validate_segment_rule(text)", render(caught.value.messages), case["expect"]))
    if case["level"] == "value":
        with pytest.raises(RuleValidationError) as caught:
            validate_segment_rule(parsed(data))
        results.append(("validate_segment_rule(value)", render(caught.value.messages), expected(case, value=True)))
    return results


def _validate_snapshots(case: dict[str, Any], data: bytes) -> list[tuple[str, str, str]]:
    if case["level"] == "cli":
        pytest.skip("only the command refuses an empty input: the service takes an empty batch")
    if case["level"] == "text":  # the strict parser refuses a line: say it as the CLI does
        with pytest.raises(jsontext.JSONTextError) as caught:
            for number, line in enumerate(data.split(b"\n"), start=1):  # noqa: B007 (read after the loop)
                decoded = jsontext.decode(line)
                if decoded.strip(" \t\r"):
                    jsontext.loads(decoded)
        return [("jsontext", f"line {number}: not valid JSON ({caught.value})", case["expect"])]
    with pytest.raises(InvalidInput) as caught:
        service.load_snapshots(snapshot_lines(data))
    return [("load_snapshots", str(caught.value), service_fragment(case))]


def _validate_import(case: dict[str, Any], data: bytes) -> list[tuple[str, str, str]]:
    transfer = pytest.importorskip("contact_segments.rules.transfer", reason="rules/transfer.py does not exist yet")
    results = []
    with pytest.raises(transfer.ExportValidationError) as caught:
        transfer.load_export(data)
    results.append(("load_export(bytes)", render(caught.value.messages), case["expect"]))
    if case["level"] == "value":
        with pytest.raises(transfer.ExportValidationError) as caught:
            transfer.load_export(parsed(data))
        results.append(("load_export(value)", render(caught.value.messages), expected(case, value=True)))
    return results


VALIDATORS = {"rules": _validate_rule, "snapshots": _validate_snapshots, "imports": _validate_import}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_the_validators_refuse_it(case: dict[str, Any], generated_dir: Path) -> None:
    data = document(case, generated_dir).read_bytes()
    started = time.perf_counter()
    results = VALIDATORS[case["family"]](case, data)
    FIGURES.record(f"validator {case['family']}", case, (time.perf_counter() - started) / len(results))
    for name, message, fragment in results:
        refuses(fragment, message, f"{case_id(case)} via {name}")


# --------------------------------------------------------------------------- real processes, memory

#: The worst documents of each kind (100,000 levels, 50 MB strings, a million elements or
#: members), and a small one of each family for the baseline, run in a real ``segments`` process
#: whose peak resident set is measured.  (The other huge ones go through ``CliRunner`` above.)
WORST = {
    "rule_deep_arrays", "rule_long_literal", "rule_million_values",
    "snapshot_deep", "snapshot_long_first_name", "snapshot_long_key", "snapshot_million_tags",
    "snapshot_million_custom", "snapshot_million_lines",
    "import_deep", "import_long_description", "import_million_segments", "import_million_values",
    "import_million_keys",
}  # fmt: skip
SUBPROCESS_CASES = [case for case in CASES if case["file"] is None and case["generated"]["recipe"] in WORST] + [
    next(case for case in by_family(family) if case["level"] != "cli") for family in generate.FAMILIES
]

#: The child's own peak (``VmHWM``, in kB): ``ru_maxrss`` would also count the pytest process it
#: was forked from, as Linux carries the maximum across ``exec``.
_MEASURED = """
import os, resource, sys
try:
    from contact_segments.cli import main
    main(prog_name="segments")
finally:
    try:
        with open("/proc/self/status") as status:
            peak = next(line.split()[1] for line in status if line.startswith("VmHWM:"))
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with open(os.environ["HOSTILE_PEAK_FILE"], "w") as out:
        out.write(str(peak))
"""


def run_measured(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """Run ``segments ARGS`` in a subprocess; its result, wall time and peak resident set (MB)."""
    peak_file = tmp_path / "peak"
    env = {key: value for key, value in os.environ.items() if key != "SEGMENTS_BROKER_URL"}
    env |= {"HOSTILE_PEAK_FILE": str(peak_file), "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    process = subprocess.run(
        [sys.executable, "-c", _MEASURED, *args], env=env, cwd=tmp_path, capture_output=True, text=True,
        encoding="utf-8", errors="backslashreplace", timeout=300,
    )
    seconds = time.perf_counter() - started
    return process, seconds, int(peak_file.read_text()) / 1024  # kB


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _seeded(f"sqlite:///{tmp_path_factory.mktemp('hostile-subprocess') / 'segments.db'}")


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=case_id)
def test_a_real_process_refuses_it_in_bounded_memory(
    case: dict[str, Any], sqlite_db: str, generated_dir: Path, tmp_path: Path
) -> None:
    if case["family"] == "imports" and (reason := import_commands_missing()):
        pytest.skip(reason)
    path = document(case, generated_dir)
    engine = make_engine(sqlite_db)
    before = dump(engine)
    for command in COMMANDS[case["family"]]:
        args = ["--db", sqlite_db, "--now", str(NOW), *(arg.format(file=path) for arg in command)]
        process, seconds, peak_mb = run_measured(args, tmp_path)
        what = f"{case_id(case)} via a `segments {command[0]}` process"
        assert process.returncode == 2, f"{what}: exit status {process.returncode}\n{process.stderr[-3000:]}"
        refuses(case["expect"], process.stdout + process.stderr, what)
        FIGURES.record(f"process {command[0]}", case, seconds)
        key = f"{case_id(case)} ({command[0]})"
        FIGURES.peak_rss_mb[key] = round(peak_mb, 1)
        if case["file"] is not None:
            FIGURES.peak_rss_mb["baseline_rss_mb"] = max(FIGURES.peak_rss_mb.get("baseline_rss_mb", 0), round(peak_mb, 1))
        bound = MEMBER_DENSE_BOUND_MB if case["file"] is None and "million_keys" in case_id(case) else PEAK_RSS_BOUND_MB
        assert peak_mb < bound, f"{what}: peak resident set {peak_mb:.0f} MB, over {bound} MB"
    after = dump(engine)
    engine.dispose()
    assert after == before, f"{what} wrote to the database"


# --------------------------------------------------------------------------- the corpus itself


def test_the_corpus_is_current_and_large_enough() -> None:
    """The stored files are what generate.py writes, and there are at least 300 documents."""
    process = subprocess.run([sys.executable, str(HOSTILE / "generate.py"), "--check"], capture_output=True, text=True)
    assert process.returncode == 0, f"run `python tests/data/hostile/generate.py`:\n{process.stderr}"
    assert len(CASES) >= 300
    assert all(len(by_family(family)) >= 50 for family in generate.FAMILIES)
    stored = [path for path in HOSTILE.rglob("*") if path.is_file()]
    assert max(path.stat().st_size for path in stored) < 100 * 1024


def test_the_import_cases_are_built_on_a_valid_export() -> None:
    """The import-file cases break a valid export in one place each: the base must be valid, or
    they would be refused for the wrong reason (update ``EXPORT`` in generate.py if the format moves)."""
    transfer = pytest.importorskip("contact_segments.rules.transfer", reason="rules/transfer.py does not exist yet")
    transfer.load_export(json.dumps(generate.EXPORT))
    rule = validate_segment_rule(generate.RULE)
    assert rule == generate.RULE
    assert service.load_snapshots([generate.SNAPSHOT])
