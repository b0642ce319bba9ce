"""A client for the JSONLogic oracle: json-logic-js 2.0.5 run by node (``tests/oracle/oracle.js``).

The reference implementation defines what our rules mean (DESIGN.md, "The rules"), so property tests
compare our evaluators with it. One node process serves many batches over pipes::

    with JsOracle() as js:
        results = js.evaluate([(rule, data), ...])   # [JsResult(value=...) | JsResult(error=...)]

Results cross the pipe as JSON, with NaN and +-Infinity kept (as the bare words Python's json module
reads): a NaN where the reference has null is a difference. Before comparing, pass our own values
through :func:`normalise` (JSON types only), then compare with :func:`same_value`, which keeps ``True``
apart from ``1`` and takes NaN as equal to NaN.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ORACLE_DIR = Path(__file__).resolve().parents[1] / "oracle"
ORACLE_SCRIPT = ORACLE_DIR / "oracle.js"
PINNED_VERSION = "2.0.5"
INSTALL_HINT = "npm ci --prefix tests/oracle"


class OracleError(RuntimeError):
    """The oracle process failed or broke the protocol (a rule that throws is not this: see JsResult)."""


@dataclass(frozen=True)
class JsResult:
    """What json-logic-js made of one ``(rule, data)`` case: a value, or the message it threw."""

    value: Any = None
    error: str | None = None

    @property
    def raised(self) -> bool:
        return self.error is not None


def find_node() -> str | None:
    """The node executable: ``$SEGMENTS_NODE`` (a name or a path) if set, else ``node`` on PATH."""
    return shutil.which(os.environ.get("SEGMENTS_NODE") or "node")


def unavailable_reason() -> str | None:
    """Why the oracle cannot run here, or ``None`` when node and the pinned json-logic-js are installed."""
    if find_node() is None:
        return "node is not on PATH (or SEGMENTS_NODE): the json-logic-js oracle cannot run"
    manifest = ORACLE_DIR / "node_modules" / "json-logic-js" / "package.json"
    if not manifest.is_file():
        return f"json-logic-js is not installed for the oracle: run `{INSTALL_HINT}`"
    installed = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if installed != PINNED_VERSION:
        return f"the oracle needs json-logic-js {PINNED_VERSION}, found {installed}: run `{INSTALL_HINT}`"
    return None


def require_oracle() -> JsOracle:
    """Start the oracle for a test; skip when it cannot run, or fail if SEGMENTS_REQUIRE_SERVICES=1."""
    reason = unavailable_reason()
    if reason is not None:
        if os.environ.get("SEGMENTS_REQUIRE_SERVICES") == "1":
            pytest.fail(f"SEGMENTS_REQUIRE_SERVICES=1 and {reason}", pytrace=False)
        pytest.skip(reason)
    return JsOracle()


class JsOracle:
    """One long-running ``node tests/oracle/oracle.js`` process; use as a context manager, or close()."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise OracleError(reason)
        # stderr is inherited: pytest captures what node says when it crashes.
        self._process = subprocess.Popen(
            [find_node(), str(ORACLE_SCRIPT)],
            cwd=ORACLE_DIR,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            encoding="utf-8",
        )

    def evaluate(self, cases: Iterable[tuple[Any, Any]]) -> list[JsResult]:
        """Apply each ``(rule, data)`` with json-logic-js, in one round trip."""
        batch = [[rule, data] for rule, data in cases]
        # allow_nan=False: NaN is not JSON, and a test that sends it has a bug.
        line = json.dumps(batch, allow_nan=False, separators=(",", ":"))
        process = self._process
        if process.stdin is None or process.stdout is None or process.poll() is not None:
            raise OracleError(f"the oracle is not running{self._exit_details()}")
        try:
            process.stdin.write(line + "\n")
            process.stdin.flush()
            reply = process.stdout.readline()
        except OSError as exc:
            raise OracleError(f"lost the oracle: {exc}{self._exit_details()}") from exc
        if not reply:
            raise OracleError(f"the oracle closed its output{self._exit_details()}")
        answer = json.loads(reply, parse_int=_js_integer)  # NaN and Infinity: json reads them as floats
        if not isinstance(answer, list):
            raise OracleError(f"the oracle refused the batch: {answer}")
        if len(answer) != len(batch):
            raise OracleError(f"sent {len(batch)} cases, the oracle answered {len(answer)}")
        return [JsResult(value=item.get("ok"), error=item.get("error")) for item in answer]

    def evaluate_one(self, rule: Any, data: Any = None) -> JsResult:
        return self.evaluate([(rule, data)])[0]

    def close(self) -> None:
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            process.stdin.close()  # end of input: oracle.js exits on its own
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()

    def __enter__(self) -> JsOracle:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _exit_details(self) -> str:
        code = self._process.poll()
        return "" if code is None else f" (node exited with {code}; its stderr is in the captured output)"


def _js_integer(text: str) -> int | float:
    """An integer the oracle printed. Every JavaScript number is a double: past 2**53, JSON.stringify
    prints the shortest digits that round-trip (``35042183837906910`` for ``3.504218383790691e16``),
    which only mean the right number when read back as a double."""
    value = int(text)
    return value if abs(value) <= 2**53 else float(text)


def normalise(value: Any) -> Any:
    """Our value as it reaches us from the oracle: JSON types, plus the non-finite floats.

    Tuples become lists; ``-0.0`` becomes ``0.0`` (JSON writes -0 as 0). Anything that is not a JSON
    value raises TypeError, so an evaluator that leaks an internal type is caught, not compared loosely.
    """
    match value:
        case None | bool() | str() | int():
            return value
        case float():
            return value + 0.0  # -0.0 + 0.0 == 0.0
        case list() | tuple():
            return [normalise(item) for item in value]
        case Mapping():
            return {_key(k): normalise(v) for k, v in value.items()}
    raise TypeError(f"not a JSON value: {value!r} ({type(value).__name__})")


def _key(key: object) -> str:
    if not isinstance(key, str):
        raise TypeError(f"not a JSON object key: {key!r}")
    return key


def same_value(a: Any, b: Any) -> bool:
    """Structural equality of JSON values: numbers by value (1 == 1.0, NaN == NaN), booleans only
    equal to booleans (``True != 1``)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int | float) or isinstance(b, int | float):
        return isinstance(a, int | float) and isinstance(b, int | float) and (a == b or (a != a and b != b))
    if isinstance(a, Sequence) and not isinstance(a, str):
        return (
            isinstance(b, Sequence)
            and not isinstance(b, str)
            and len(a) == len(b)
            and all(same_value(x, y) for x, y in zip(a, b, strict=True))
        )
    if isinstance(a, Mapping):
        return isinstance(b, Mapping) and a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def to_json(value: Any) -> str:
    """A compact rendering for failure messages (non-JSON values shown with repr)."""
    return json.dumps(value, separators=(",", ":"), default=repr)  # ASCII: lone surrogates print too
