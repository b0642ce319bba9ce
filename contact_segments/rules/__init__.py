"""The rules layer: pure.  What a segment rule is, what it means, and how it is evaluated.

Nothing here reads a clock, a file or a database.
"""

from .compiler import CompiledRule, apply, compile_predicate, compile_rule
from .errors import Diagnostic, RuleError
from .operators import CLASSIC, Operator, OperatorRegistry

__all__ = [
    "CLASSIC",
    "CompiledRule",
    "Diagnostic",
    "Operator",
    "OperatorRegistry",
    "RuleError",
    "apply",
    "compile_predicate",
    "compile_rule",
]
