"""The rules layer: pure.  What a segment rule is, what it means, and how it is evaluated.

* :func:`apply` / :func:`compile_rule` / :func:`compile_predicate`: classic JSONLogic with the
  meaning json-logic-js 2.0.5 gives it, compiled once to a Python function;
* :func:`validate_segment_rule`: what a segment rule may say (the typed field catalog, limits);
* :func:`rule_to_sql`: the same meaning as a SQLAlchemy condition, for all contacts at once;
* :func:`fields_read`, :func:`depends_on_now`, :func:`time_thresholds`: what a rule reads;
* :func:`conditions_to_rule` / :func:`rule_to_conditions` / :func:`filter_count`: the editor.

Nothing here reads a clock, a file or a database.
"""

from .analysis import FieldWindow, TimeThreshold, depends_on_now, fields_read, time_thresholds
from .catalog import FIELDS, FieldSpec, FieldType, lookup
from .compiler import CompiledRule, apply, compile_predicate, compile_rule
from .conditions import (
    ConditionCategory,
    ConditionGroupSchema,
    ConditionOperator,
    ConditionSchema,
    ConditionsValidationError,
    conditions_to_rule,
    filter_count,
    load_conditions,
    rule_to_conditions,
)
from .errors import Diagnostic, RuleError
from .operators import CLASSIC, Operator, OperatorRegistry
from .sql import InstantRequired, rule_to_sql
from .validation import RuleValidationError, SegmentRule, SegmentRuleSchema, validate_segment_rule

__all__ = [
    "CLASSIC",
    "FIELDS",
    "CompiledRule",
    "ConditionCategory",
    "ConditionGroupSchema",
    "ConditionOperator",
    "ConditionSchema",
    "ConditionsValidationError",
    "Diagnostic",
    "FieldSpec",
    "FieldType",
    "FieldWindow",
    "InstantRequired",
    "Operator",
    "OperatorRegistry",
    "RuleError",
    "RuleValidationError",
    "SegmentRule",
    "SegmentRuleSchema",
    "TimeThreshold",
    "apply",
    "compile_predicate",
    "compile_rule",
    "conditions_to_rule",
    "depends_on_now",
    "fields_read",
    "filter_count",
    "load_conditions",
    "lookup",
    "rule_to_conditions",
    "rule_to_sql",
    "time_thresholds",
    "validate_segment_rule",
]
