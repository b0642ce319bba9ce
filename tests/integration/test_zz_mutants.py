import operator
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from contact_segments.rules import sql
from tests.integration import test_sql_equivalence as t
from tests.integration.test_sql_equivalence import harness  # noqa

o = {name: getattr(sql, name) for name in ["_truthy_branch", "_compare_branch", "_loose_equal_branch", "_holds_branch", "_missing_branch", "_strict_equal_branch", "_non_null_where"]}
MUTANTS = {
    "empty string truthy": ("_truthy_branch", lambda b: True if b.kind == "string" else o["_truthy_branch"](b)),
    "null compares false": ("_compare_branch", lambda b, op, c: False if b.kind == "null" else o["_compare_branch"](b, op, c)),
    "number vs string constant false": ("_loose_equal_branch", lambda b, c: False if b.kind == "number" and type(c) is str else o["_loose_equal_branch"](b, c)),
    "'' in '' true": ("_holds_branch", lambda b, n: sql._Contains(b.value, sql.literal(n, sql.Text())) if b.kind == "string" else o["_holds_branch"](b, n)),
    "'' not missing": ("_missing_branch", lambda b: False if b.kind == "string" else o["_missing_branch"](b)),
    "bool == number wrong": ("_loose_equal_branch", lambda b, c: (b.value == sql.literal(bool(c))) if b.kind == "boolean" and type(c) in (int, float) else o["_loose_equal_branch"](b, c)),
    "strict number==bool": ("_strict_equal_branch", lambda b, c: (sql._number_of_boolean(b.value) == float(c)) if b.kind == "boolean" and type(c) in (int, float) else o["_strict_equal_branch"](b, c)),
    "> is >=": ("_SQL_OPERATORS", {**sql._SQL_OPERATORS, ">": operator.ge}),
    "anchor on any var": ("_non_null_where", lambda node, truthy: o["_non_null_where"](node, truthy=True) if isinstance(node, dict) and "var" in node else o["_non_null_where"](node, truthy=truthy)),
    "string == case-insensitive": ("_loose_equal_branch", lambda b, c: (sql.func.lower(b.value) == c.lower()) if b.kind == "string" and type(c) is str else o["_loose_equal_branch"](b, c)),
}

@pytest.mark.parametrize("mutant", list(MUTANTS))
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_mutant(harness, mutant, monkeypatch):
    name, fn = MUTANTS[mutant]
    monkeypatch.setattr(sql, name, fn)
    inner = t.test_sql_selects_what_the_python_predicate_selects.hypothesis.inner_test
    run = settings(max_examples=60, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))(given(example=t.examples())(inner))
    with pytest.raises(Exception):
        run(harness)
