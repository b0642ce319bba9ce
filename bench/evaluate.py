"""How fast is one evaluation of a segment rule?

Over generated contact snapshots (evaluation views), for four segment rules, this times:

* ``compiled``  - ``contact_segments.rules.compile_rule``: the rule compiled once to Python;
* ``lambda``    - the same predicate written by hand in Python: the floor;
* ``panzi``     - panzi-json-logic, a pure-Python interpreter;
* ``datalogic`` - datalogic-py, a native (Rust) engine, its rule compiled once.

Each figure is the median over several passes of nanoseconds per evaluation; each ratio is to
the lambda measured in the same run.  Run: ``python bench/evaluate.py [--contacts N]``
(``tox -e bench``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from contact_segments.rules import compile_rule

DAY = 86_400
NOW = 1_780_000_000.0

RULES: dict[str, tuple[Any, Callable[[dict], Any]]] = {
    "country known": (
        {"!!": [{"var": "country"}]},
        lambda c: bool(c["country"]),
    ),
    "tagged promotion": (
        {"in": ["promotion", {"var": "tags"}]},
        lambda c: "promotion" in c["tags"],
    ),
    "created <7 days ago": (
        {">": [{"var": "created_at"}, {"-": [{"var": "now"}, 7 * DAY]}]},
        lambda c: c["created_at"] is not None and c["created_at"] > c["now"] - 7 * DAY,
    ),
    "and/or group of six": (
        {
            "and": [
                {"==": [{"var": "country"}, "MY"]},
                {"or": [{"in": ["promotion", {"var": "tags"}]}, {"in": [{"var": "language"}, ["en", "ms"]]}]},
                {"!!": [{"var": "email"}]},
                {"!!": [{"var": "last_incoming_message_at"}]},
                {"<": [{"var": "last_incoming_message_at"}, {"-": [{"var": "now"}, 30 * DAY]}]},
            ]
        },
        lambda c: (
            c["country"] == "MY"
            and ("promotion" in c["tags"] or c["language"] in ("en", "ms"))
            and bool(c["email"])
            and c["last_incoming_message_at"] is not None
            and c["last_incoming_message_at"] < c["now"] - 30 * DAY
        ),
    ),
}


def contacts(count: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)

    def maybe(value: Any, p: float = 0.8) -> Any:
        return value if rng.random() < p else None

    return [
        {
            "id": f"c{i}",
            "first_name": maybe("Ana"),
            "email": maybe(f"c{i}@example.com"),
            "country": maybe(rng.choice(["MY", "SG", "ID", "US"])),
            "language": maybe(rng.choice(["en", "ms", "id"])),
            "lifecycle": maybe(rng.choice(["lead", "customer", "churned"])),
            "tags": rng.sample(["promotion", "vip", "new", "b2b"], rng.randint(0, 3)),
            "channels": rng.sample(["whatsapp", "email", "sms"], rng.randint(0, 2)),
            "created_at": NOW - rng.uniform(0, 365 * DAY),
            "last_incoming_message_at": maybe(NOW - rng.uniform(0, 90 * DAY), 0.7),
            "custom_fields": {},
            "now": NOW,
        }
        for i in range(count)
    ]


def evaluators(rule: Any, floor: Callable[[dict], Any]) -> dict[str, Callable[[dict], Any]]:
    found: dict[str, Callable[[dict], Any]] = {"lambda": floor, "compiled": compile_rule(rule)}
    try:
        from json_logic import jsonLogic  # panzi-json-logic

        found["panzi"] = lambda data: jsonLogic(rule, data)
    except ImportError:
        pass
    try:
        import datalogic_py

        compiled = datalogic_py.Engine().compile(rule)
        found["datalogic"] = compiled.evaluate
    except ImportError:
        pass
    return found


def time_per_call(function: Callable[[dict], Any], data: list[dict], passes: int) -> float:
    """Median nanoseconds per call over ``passes`` passes through all of ``data``."""
    samples = []
    for _ in range(passes):
        start = time.perf_counter_ns()
        for item in data:
            function(item)
        samples.append((time.perf_counter_ns() - start) / len(data))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contacts", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    data = contacts(args.contacts)
    names = ["lambda", "compiled", "panzi", "datalogic"]
    print(f"ns per evaluation, median of {args.passes} passes over {len(data):,} contacts (ratio to lambda)")
    print(f"{'rule':<22}" + "".join(f"{name:>20}" for name in names))
    for label, (rule, floor) in RULES.items():
        runners = evaluators(rule, floor)
        expected = [bool(floor(item)) for item in data]
        for name, runner in runners.items():
            got = [bool(runner(item)) for item in data]
            if got != expected:
                raise SystemExit(f"{name} disagrees with the lambda on {label!r}")
        floor_ns = time_per_call(floor, data, args.passes)
        cells = []
        for name in names:
            if name not in runners:
                cells.append(f"{'n/a':>20}")
                continue
            ns = floor_ns if name == "lambda" else time_per_call(runners[name], data, args.passes)
            cells.append(f"{ns:>10.0f} ({ns / floor_ns:>5.2f}x)")
        print(f"{label:<22}" + "".join(cells))


if __name__ == "__main__":
    main()
