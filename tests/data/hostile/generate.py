"""The hostile corpus: bad documents for the three inputs users hand us, and what each must say.

Families:

- ``rules``: segment rules, as ``segments segment create --rule @FILE`` reads them (JSON);
- ``snapshots``: contact snapshots, as ``segments contacts upsert FILE`` reads them (JSON Lines);
- ``imports``: export files, as ``segments validate FILE`` and ``segments import FILE`` read them.

Every case is refused, with a message containing the case's ``expect`` fragment.  Its ``level``
says where it goes wrong, and so which layers can be handed it:

- ``text``: the bytes are not (strict) JSON, or too big as text; only parsers see it;
- ``value``: the JSON parses (strictly), and the value itself is refused: by the validators and
  the service too (``expect_value`` when their message differs from the text's);
- ``cli``: only the command refuses it (an empty snapshot file: the service takes an empty batch).

Small documents are stored under ``rules/``, ``snapshots/`` and ``imports/``.  Huge ones (100,000
levels of nesting, 50 MB strings, million-element arrays) are *recipes* in the manifest
(``generated``), written at test time by :func:`materialise`, so the repository stays small.

Run ``python tests/data/hostile/generate.py`` to rewrite the files and ``manifest.json`` (the same
bytes every time); ``--check`` only verifies that they are current.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Callable
from copy import deepcopy
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
FAMILIES = ("rules", "snapshots", "imports")
EXTENSIONS = {"rules": "json", "snapshots": "jsonl", "imports": "json"}
#: Stored files stay small; anything bigger is a recipe.
MAX_STORED_BYTES = 16 * 1024

MB50 = 50 * 1024 * 1024
MILLION = 1_000_000
DEEP = 100_000

# The strings an attacker tries first, as keys and as values.
DROP = "'; DROP TABLE contacts; --"
TRAVERSAL = "../../etc/passwd"
HOSTILE_NAMES = {
    "class": "__class__",
    "proto": "__proto__",
    "constructor": "constructor",
    "dunder-dict": "__dict__",
    "globals": "__globals__",
    "to-string": "toString",
    "drop-table": DROP,
    "traversal": TRAVERSAL,
    "windows-traversal": "..\\..\\windows\\win.ini",
    "nul": "\u0000",
    "nul-suffix": "country\u0000",
    "escape-sequence": "\u001b[2J\u001b[31mred",
    "newline": "line\nbreak",
    "bell": "\u0007",
    "rtl-override": "\u202ecountry",
    "zero-width": "coun\u200btry",
    "bom": "\ufeffcountry",
    "lone-surrogate": "\ud800",
    "template": "${7*7}{{7*7}}",
    "format-string": "%s%n%x{0}",
}

# ----------------------------------------------------------------------------- valid bases

V = {"var": "country"}
RULE = {"and": [{"==": [V, "MY"]}, {"in": ["promotion", {"var": "tags"}]}]}
SNAPSHOT = {
    "id": "c-1",
    "version": 1,
    "country": "MY",
    "tags": ["promotion"],
    "channels": ["whatsapp"],
    "created_at": "2026-01-31T09:30:00+08:00",
    "custom_fields": {"score": 5},
}
SEGMENT = {"name": "Promotion MY", "description": "", "rule": RULE, "conditions": None, "is_default": False}
EXPORT = {
    "format": "contact-segments/export",
    "format_version": 1,
    "exported_at": "2026-01-31T09:30:00Z",
    "workspace": {"id": "acme", "timezone": "Asia/Kuala_Lumpur"},
    "segments": [SEGMENT],
}

# ----------------------------------------------------------------------------- the cases


class Corpus:
    def __init__(self) -> None:
        self.cases: list[dict[str, Any]] = []
        self.files: dict[str, bytes] = {}
        self.slugs: set[tuple[str, str]] = set()

    def add(
        self,
        family: str,
        slug: str,
        what: str,
        expect: str,
        *,
        doc: Any = None,
        lines: list[Any] | None = None,
        text: str | None = None,
        raw: bytes | None = None,
        level: str = "value",
        expect_value: str | None = None,
        generated: dict[str, Any] | None = None,
    ) -> None:
        assert family in FAMILIES and level in ("text", "value", "cli"), (family, level)
        assert (family, slug) not in self.slugs, slug
        self.slugs.add((family, slug))
        case: dict[str, Any] = {"family": family, "what": what, "level": level, "expect": expect}
        if expect_value is not None:
            case["expect_value"] = expect_value
        if generated is not None:
            assert _RECIPES[generated["recipe"]], generated
            case = {"file": None, **case, "generated": generated}
        else:
            if raw is None:
                if text is None:
                    text = (
                        "".join(_dumps(line) + "\n" for line in lines) if lines is not None
                        else _dumps(doc) + ("\n" if family == "snapshots" else "")
                    )
                raw = text.encode("utf-8")
            assert len(raw) <= MAX_STORED_BYTES, (case_id, len(raw))
            name = f"{family}/{slug}.{EXTENSIONS[family]}"
            self.files[name] = raw
            case = {"file": name, **case}
        self.cases.append(case)


def _dumps(value: Any) -> str:
    """Compact JSON; lone surrogates (which UTF-8 cannot hold) as ``\\u`` escapes."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = json.dumps(value)
    return text


def _with(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    result = deepcopy(base)
    result.update(changes)
    return result


def _without(base: dict[str, Any], key: str) -> dict[str, Any]:
    result = deepcopy(base)
    del result[key]
    return result


def _nested(levels: int, inner: Any, wrap: Callable[[Any], Any]) -> Any:
    for _ in range(levels):
        inner = wrap(inner)
    return inner


def _q(text: str) -> str:
    """How the validators quote a name: Python's repr, at most 80 characters."""
    return repr(text) if len(text) <= 80 else repr(text[:80])[:81] + "…"


# ----------------------------------------------------------------------------- rules


def rules(corpus: Corpus) -> None:
    add = corpus.add
    f = "rules"
    not_utf8 = "the rule is not UTF-8 text"
    for slug, raw in {
        "utf8-invalid-ff": b'{"==": [{"var": "country"}, "\xff"]}',
        "utf8-lone-continuation": b'{"==": [{"var": "country"}, "\x80"]}',
        "utf8-overlong-nul": b'{"==": [{"var": "country"}, "a\xc0\x80"]}',
        "utf8-overlong-slash": b'{"var": "..\xc0\xaf..\xc0\xafetc\xc0\xafpasswd"}',
        "utf8-encoded-surrogate": b'{"==": [{"var": "country"}, "\xed\xa0\x80"]}',
        "utf8-truncated-sequence": b'{"==": [{"var": "country"}, "\xe2\x82"]}',
        "utf8-latin1-text": b'{"==": [{"var": "country"}, "Cura\xe7ao"]}',
        "utf8-beyond-unicode": b'{"==": [{"var": "country"}, "\xf5\x80\x80\x80"]}',
        "utf8-in-key": b'{"\xfe\xff": [true]}',
        "utf16-le-with-bom": "\ufeff" .encode("utf-16-le") + '{"var": "country"}'.encode("utf-16-le"),
        "utf16-be-with-bom": "\ufeff".encode("utf-16-be") + '{"var": "country"}'.encode("utf-16-be"),
        "utf32-le-with-bom": "\ufeff{}".encode("utf-32"),
    }.items():
        add(f, slug, "bytes that are not UTF-8", not_utf8, raw=raw, level="text")
    add(f, "utf8-bom", "a UTF-8 byte order mark before a valid rule", "byte order mark",
        raw=b"\xef\xbb\xbf" + _dumps(RULE).encode(), level="text")
    add(f, "utf8-bom-twice", "two byte order marks", "byte order mark",
        raw=b"\xef\xbb\xbf\xef\xbb\xbftrue", level="text")

    # NaN, Infinity and numbers beyond a double, as JSON tokens
    for slug, token in {"nan": "NaN", "infinity": "Infinity", "minus-infinity": "-Infinity"}.items():
        add(f, f"token-{slug}-literal", f"{token} as a literal", f"{token} is not a JSON number",
            text=f'{{"==": [{{"var": "custom_fields.score"}}, {token}]}}', level="text")
        add(f, f"token-{slug}-time", f"{token} as the seconds of now - N", f"{token} is not a JSON number",
            text=f'{{">": [{{"var": "created_at"}}, {{"-": [{{"var": "now"}}, {token}]}}]}}', level="text")
        add(f, f"token-{slug}-list", f"{token} in a list of values", f"{token} is not a JSON number",
            text=f'{{"in": [{{"var": "custom_fields.level"}}, [1, {token}]]}}', level="text")
    add(f, "token-nan-lowercase", "nan in lower case (not a token at all)", "Expecting value",
        text='{"==": [{"var": "custom_fields.score"}, nan]}', level="text")
    for slug, token in {"1e400": "1e400", "minus-1e400": "-1e400", "1e309": "1e309",
                        "max-double-times-10": "17976931348623157e300"}.items():
        add(f, f"huge-float-{slug}", f"{token}: beyond a double", "is out of range",
            text=f'{{"<": [{{"var": "custom_fields.score"}}, {token}]}}', level="text")
    add(f, "huge-int-5000-digits", "an integer of 5,000 digits", "too many digits",
        text='{"<": [{"var": "custom_fields.score"}, 1' + "0" * 5000 + "]}", level="text")
    for slug, number in {"2-pow-64": 2**64, "2-pow-53": 2**53, "minus-2-pow-63": -(2**63) - 1,
                         "10-pow-300": 10**300}.items():
        add(f, f"huge-int-{slug}", f"the integer {number}: beyond JavaScript's safe integers",
            "integers beyond ±(2**53 - 1) lose precision in JavaScript",
            doc={"<": [{"var": "custom_fields.score"}, number]})
    add(f, "huge-int-time-arithmetic", "now - 2**64 seconds",
        "integers beyond ±(2**53 - 1) lose precision in JavaScript",
        doc={">": [{"var": "created_at"}, {"-": [{"var": "now"}, 2**64]}]})
    add(f, "huge-int-missing-some", "missing_some of 2**64 fields",
        "integers beyond ±(2**53 - 1) lose precision in JavaScript",
        doc={"missing_some": [2**64, ["country"]]})

    # duplicate keys
    add(f, "duplicate-operator", "the same operator twice in one object", "duplicate key '=='",
        text='{"==": [{"var": "country"}, "MY"], "==": [{"var": "country"}, "SG"]}', level="text")
    add(f, "duplicate-var", "var twice", "duplicate key 'var'",
        text='{"!!": [{"var": "country", "var": "tags"}]}', level="text")
    add(f, "duplicate-proto", "__proto__ twice", "duplicate key '__proto__'",
        text='{"!!": [{"__proto__": 1, "__proto__": 2}]}', level="text")
    add(f, "duplicate-deep", "a duplicate key four levels down", "duplicate key 'or'",
        text='{"!": [{"!": [{"!": [{"or": [true], "or": [false]}]}]}]}', level="text")

    # empty and blank documents, syntax errors
    for slug, text in {"empty": "", "blank": "   ", "newlines": "\n\n\r\n", "tab": "\t"}.items():
        add(f, f"empty-{slug}", "an empty document", "the rule is empty", text=text, level="text")
    for slug, text in {
        "trailing-comma": '{"and": [true, false,]}',
        "single-quotes": "{'var': 'country'}",
        "unquoted-key": '{var: "country"}',
        "comment": '{"var": "country"} // the country',
        "block-comment": '/* rule */ {"var": "country"}',
        "truncated": '{"and": [{"==": [{"var": "country"}, "MY"]}',
        "two-documents": '{"var": "country"} {"var": "tags"}',
        "python-true": "True",
        "python-none": "None",
        "undefined": "undefined",
        "hex-number": '{"<": [{"var": "custom_fields.score"}, 0x10]}',
        "leading-zero": '{"<": [{"var": "custom_fields.score"}, 010]}',
        "plus-sign": '{"<": [{"var": "custom_fields.score"}, +1]}',
        "bare-dot-number": '{"<": [{"var": "custom_fields.score"}, .5]}',
        "unterminated-string": '{"var": "country}',
        "bad-escape": '{"var": "coun\\xtry"}',
        "lone-bracket": "]",
        "raw-nul": '{"==": [{"var": "country"}, "a\u0000b"]}',
        "raw-escape-character": '{"==": [{"var": "country"}, "\u001b[2J"]}',
        "raw-newline-in-string": '{"==": [{"var": "country"}, "M\nY"]}',
        "raw-nul-outside-string": '{"var": "country"}\u0000',
        "form-feed-only": "\u000c",
        "file-separator": "\u001ctrue",
        "javascript-regex": '{"==": [{"var": "country"}, /MY/]}',
    }.items():
        add(f, f"syntax-{slug}", "not JSON", "the rule is not valid JSON", text=text, level="text")

    # not a condition at the top
    for slug, doc, message in [

        ("top-number", 1, "expected a condition, found a number"),
        ("top-list", [RULE], "expected a condition, found a list"),
        ("top-empty-list", [], "expected a condition, found a list"),
        ("top-empty-object", {}, "an empty object is not an operation"),
        ("top-two-keys", {"var": "country", "==": [1, 1]}, "an operation is an object with exactly one key"),
    ]:
        add(f, slug, "a top level that is not a condition", message, doc=doc)
    # Text only: to the service, a rule of None is no rule at all, and a string is JSON text.
    add(f, "top-null", "null", "expected a condition, found null", text="null", level="text")
    add(f, "top-string", "a JSON string", "expected a condition, found a string", text='"country"', level="text")
    add(f, "top-json-in-a-string", "a rule inside a JSON string", "expected a condition, found a string",
        text=json.dumps(json.dumps(RULE)), level="text")

    # wrong types
    for slug, doc, message in [
        ("and-of-string", {"and": "country"}, "expected a condition, found a string"),
        ("and-empty", {"and": []}, "'and' needs at least one condition"),
        ("or-of-numbers", {"or": [1, 2]}, "expected a condition, found a number"),
        ("not-two-arguments", {"!": [True, False]}, "'!' takes 1 argument, found 2"),
        ("if-one-argument", {"if": [True]}, "'if' takes a condition, a result"),
        ("var-number", {"!!": [{"var": 1}]}, "a field name must be a string, found a number"),
        ("var-null", {"!!": [{"var": None}]}, "a field name must be a string, found null"),
        ("var-boolean", {"!!": [{"var": [True]}]}, "a field name must be a string, found a boolean"),
        ("var-object", {"!!": [{"var": {"name": "country"}}]}, "a field name must be a string, found an operation 'name'"),
        ("var-three-arguments", {"!!": [{"var": ["country", "MY", "x"]}]}, "'var' takes a field name and an optional default"),
        ("var-empty-name", {"!!": [{"var": ""}]}, "name a field: an empty name reads the whole contact"),
        ("var-default-wrong-type", {"==": [{"var": ["country", 1]}, "MY"]}, "the default of 'country' must be a string"),
        ("var-default-custom", {"==": [{"var": ["custom_fields.x", 1]}, 1]}, "a default for a custom field is not supported"),
        ("equal-number-to-string-field", {"==": [V, 1]}, "'country' (string) can be compared with a string or null, not a number"),
        ("equal-list-to-string-field", {"==": [V, ["MY"]]}, "a list of values can only be the second argument of 'in'"),
        ("equal-object", {"==": [V, {"a": 1}]}, "unknown operator 'a'"),
        ("equal-two-fields", {"==": [V, {"var": "language"}]}, "'==' compares one field with values, found 2 fields"),
        ("equal-no-field", {"==": ["MY", "MY"]}, "'==' compares one field with values, found no field"),
        ("equal-one-argument", {"==": [V]}, "'==' takes 2 arguments, found 1"),
        ("equal-three-arguments", {"==": [V, "MY", "SG"]}, "'==' takes 2 arguments, found 3"),
        ("less-than-string-field", {"<": [V, 1]}, "'<' cannot be applied to 'country' (string)"),
        ("less-than-tags", {"<": [{"var": "tags"}, 1]}, "'<' cannot be applied to 'tags' (string list)"),
        ("less-than-boolean", {"<": [{"var": "created_at"}, True]}, "is ordered against a number or now ± N seconds, not a boolean"),
        ("less-than-date-string", {"<": [{"var": "created_at"}, "2026-01-01"]}, "is ordered against a number or now ± N seconds, not a string"),
        ("greater-than-null", {">": [{"var": "custom_fields.score"}, None]}, "is ordered against a number, not null"),
        ("between-field-first", {"<": [{"var": "created_at"}, 1, 2]}, "the field goes in the middle"),
        ("greater-three-arguments", {">": [1, {"var": "created_at"}, 2]}, "'>' takes 2 arguments, found 3"),
        ("in-number-in-tags", {"in": [1, {"var": "tags"}]}, "'in' looks for a string in 'tags' (string list), not a number"),
        ("in-tags-in-list", {"in": [{"var": "tags"}, ["vip"]]}, "'tags' (string list) cannot be looked up in a list of values"),
        ("in-empty-list", {"in": [V, []]}, "the list of values is empty"),
        ("in-nested-list", {"in": [V, [["MY"]]]}, "expected a literal, found a list"),
        ("in-list-of-objects", {"in": [V, [{"var": "language"}]]}, "expected a literal, found an operation 'var'"),
        ("in-timestamp", {"in": ["2026", {"var": "created_at"}]}, "'in' cannot look inside 'created_at' (timestamp)"),
        ("in-two-literals", {"in": ["a", "abc"]}, "'in' takes a string and a field"),
        ("missing-empty", {"missing": []}, "'missing' needs at least one field name"),
        ("missing-number", {"missing": [1]}, "expected a field name, found a number"),
        ("missing-now", {"missing": ["now"]}, "'now' is always present: it cannot be missing"),
        ("missing-some-zero", {"missing_some": [0, ["country"]]}, "how many fields must be present"),
        ("missing-some-string-count", {"missing_some": ["1", ["country"]]}, "expected a number, found a string"),
        ("missing-some-not-a-list", {"missing_some": [1, "country"]}, "expected a non-empty list of field names"),
        ("now-as-condition", {"var": "now"}, "'now' is not a condition"),
        ("now-equal", {"==": [{"var": "now"}, 1]}, "'==' compares one field with values, found no field"),
        ("now-arithmetic-on-field", {">": [{"var": "created_at"}, {"-": [{"var": "created_at"}, 1]}]},
         "time arithmetic starts from now"),
        ("now-arithmetic-string", {">": [{"var": "created_at"}, {"-": [{"var": "now"}, "1 day"]}]},
         "the seconds added to or taken from now must be a number, not a string"),
        ("now-arithmetic-boolean", {">": [{"var": "created_at"}, {"+": [{"var": "now"}, True]}]},
         "the seconds added to or taken from now must be a number, not a boolean"),
        ("plus-three-arguments", {">": [{"var": "created_at"}, {"+": [{"var": "now"}, 1, 2]}]},
         "'+' is supported only as time arithmetic"),
        ("key-not-a-string-ish", {"and": [{"1": [True]}]}, "unknown operator '1'"),
    ]:
        add(f, f"type-{slug}", "a wrong type or shape", message, doc=doc)

    # operators: valid JSONLogic the SQL compiler cannot run, and plain unknown ones
    for op, args in [("cat", ["a", "b"]), ("substr", ["abc", 1]), ("merge", [[1], [2]]), ("map", [[1], True]),
                     ("filter", [[1], True]), ("reduce", [[1], 0, 0]), ("all", [[1], True]), ("log", [True]),
                     ("max", [1, 2]), ("*", [2, 3]), ("%", [3, 2])]:
        add(f, f"operator-unsupported-{op if op.isalpha() else {'*': 'times', '%': 'modulo'}[op]}",
            f"'{op}': JSONLogic the SQL compiler cannot evaluate",
            f"'{op}' is valid JSONLogic but not supported in segment rules", doc={op: args})
    for slug, op in [*HOSTILE_NAMES.items(), ("eval", "eval"), ("exec", "__import__('os').system"),
                     ("upper-and", "AND"), ("spaced-and", " and"), ("empty", ""), ("sql-or", "OR 1=1"),
                     ("overlong-1000", "o" * 1000)]:
        add(f, f"operator-{slug}", f"an unknown operator named {op[:40]!r}", f"unknown operator {_q(op)}",
            doc={op: [True]})

    # field names outside the catalog
    for slug, name in [*HOSTILE_NAMES.items(),
                       ("custom-proto", "custom_fields.__proto__"), ("custom-constructor", "custom_fields.constructor"),
                       ("custom-class", "custom_fields.__class__"), ("custom-drop", "custom_fields." + DROP),
                       ("custom-traversal", "custom_fields." + TRAVERSAL), ("custom-nul", "custom_fields.x\u0000"),
                       ("custom-dotted", "custom_fields.a.b"), ("custom-65-chars", "custom_fields." + "k" * 65),
                       ("custom-empty-key", "custom_fields."), ("custom-fields-itself", "custom_fields"),
                       ("tags-length", "tags.length"), ("country-class", "country.__class__"),
                       ("cyrillic-lookalike", "c\u043euntry"), ("capitalised", "Country"), ("trailing-space", "country "),
                       ("prototype", "prototype"), ("dunder-dict-path", "a.__dict__"),
                       ("overlong-1000", "f" * 1000), ("overlong-10000", "n" * 10_000)]:
        add(f, f"field-{slug}", f"an unknown field named {name[:40]!r}", f"unknown field {_q(name)}",
            doc={"!!": [{"var": name}]})
    add(f, "field-in-missing-drop", "missing names a hostile field", f"unknown field {_q(DROP)}",
        doc={"missing": [TRAVERSAL, DROP]})

    # strings no database can store
    for slug, value, message in [
        ("nul-literal", "MY\u0000", "a string must not contain NUL"),
        ("nul-only", "\u0000", "a string must not contain NUL"),
        ("nul-in-list", ["MY", "S\u0000G"], "a string must not contain NUL"),
        ("nul-in-needle", None, "a string must not contain NUL"),
        ("surrogate-high", "\ud800", "a string must not contain a lone surrogate"),
        ("surrogate-low", "x\udfff", "a string must not contain a lone surrogate"),
        ("surrogate-reversed-pair", "\udc00\ud800", "a string must not contain a lone surrogate"),
        ("surrogate-in-default", None, "a string must not contain a lone surrogate"),
    ]:
        if slug == "nul-in-needle":
            doc: Any = {"in": ["vip\u0000", {"var": "tags"}]}
        elif slug == "surrogate-in-default":
            doc = {"==": [{"var": ["country", "\udbff"]}, "MY"]}
        elif isinstance(value, list):
            doc = {"in": [V, value]}
        else:
            doc = {"==": [V, value]}
        add(f, f"string-{slug}", "a string literal a database cannot store", message, doc=doc)

    # limits, small enough to store
    add(f, "depth-33", "33 levels of nesting, one over the limit", "nested too deeply",
        doc=_nested(16, V, lambda x: {"!": [x]}))
    add(f, "depth-1000-arrays", "1,000 levels of arrays", "nested too deeply", text="[" * 1000 + "]" * 1000,
        level="text")
    add(f, "depth-2000-unbalanced", "2,000 opening brackets and nothing else", "nested too deeply",
        text="{" * 2000, level="text")
    add(f, "values-2001", "2,001 JSON values, one over the limit", "more than 2000 JSON values",
        doc={"in": [V, ["MY"] * 1996]})

    # huge documents, written at test time
    for slug, recipe, what, message in [
        ("nesting-100000-arrays", "rule_deep_arrays", "100,000 levels of arrays", "the rule is too large"),
        ("nesting-100000-negations", "rule_deep_negations", "100,000 nested negations", "the rule is too large"),
        ("string-50mb-literal", "rule_long_literal", "a 50 MB string literal", "the rule is too large"),
        ("string-50mb-field-name", "rule_long_field", "a 50 MB field name", "the rule is too large"),
        ("array-million-values", "rule_million_values", "a list of a million values", "the rule is too large"),
        ("object-million-keys", "rule_million_keys", "an object of a million keys", "the rule is too large"),
        ("size-64kib-plus-one", "rule_just_too_large", "65,537 bytes: one over the limit", "more than 65536 bytes"),
        ("whitespace-70kb", "rule_padded", "a valid rule padded to 70 KB with spaces", "more than 65536 bytes"),
    ]:
        add(f, slug, what, message, generated={"recipe": recipe}, level="text")


# ----------------------------------------------------------------------------- snapshots


def snapshots(corpus: Corpus) -> None:
    add = corpus.add
    f = "snapshots"
    ok = SNAPSHOT
    second = _with(ok, id="c-2")

    for slug, raw in {
        "utf8-invalid-ff": b'{"id": "c-1", "version": 1, "country": "\xff"}\n',
        "utf8-overlong-nul": b'{"id": "c-1\xc0\x80", "version": 1}\n',
        "utf8-encoded-surrogate": b'{"id": "c-1", "version": 1, "first_name": "\xed\xb2\x80"}\n',
        "utf8-truncated-at-end": b'{"id": "c-1", "version": 1, "first_name": "\xe2\x82',
        "utf8-latin1": b'{"id": "c-1", "version": 1, "first_name": "Ren\xe9e"}\n',
        "utf16-file": "\ufeff".encode("utf-16-le") + b'{\x00"\x00i\x00d\x00"\x00}\x00\n\x00',
    }.items():
        add(f, slug, "bytes that are not UTF-8", "line 1: not valid JSON (not UTF-8 text", raw=raw, level="text")
    add(f, "utf8-invalid-on-line-3", "two good lines, then invalid UTF-8", "line 3: not valid JSON (not UTF-8 text",
        raw=(_dumps(ok) + "\n" + _dumps(second) + "\n").encode() + b'{"id": "c-3", "version": 1, "country": "\x85"}\n',
        level="text")
    add(f, "bom-line-1", "a byte order mark before the first line", "byte order mark",
        raw=b"\xef\xbb\xbf" + _dumps(ok).encode() + b"\n", level="text")
    add(f, "bom-line-2", "a byte order mark before the second line", "line 2: not valid JSON (it starts with a byte order mark",
        raw=(_dumps(ok) + "\n\ufeff" + _dumps(second) + "\n").encode(), level="text")

    for slug, token in {"nan": "NaN", "infinity": "Infinity", "minus-infinity": "-Infinity"}.items():
        add(f, f"token-{slug}-version", f"{token} as the version", f"{token} is not a JSON number",
            text=f'{{"id": "c-1", "version": {token}}}\n', level="text")
        add(f, f"token-{slug}-custom", f"{token} as a custom field", f"{token} is not a JSON number",
            text=f'{{"id": "c-1", "version": 1, "custom_fields": {{"score": {token}}}}}\n', level="text")
    add(f, "huge-float-version", "1e400 as the version", "is out of range",
        text='{"id": "c-1", "version": 1e400}\n', level="text")
    add(f, "huge-float-custom", "-1e400 as a custom field", "is out of range",
        text='{"id": "c-1", "version": 1, "custom_fields": {"score": -1e400}}\n', level="text")
    add(f, "huge-int-5000-digits", "a version of 5,000 digits", "too many digits",
        text='{"id": "c-1", "version": 9' + "9" * 5000 + "}\n", level="text")
    for slug, number in {"2-pow-64": 2**64, "2-pow-53-plus-1": 2**53 + 1, "minus-2-pow-63": -(2**63)}.items():
        add(f, f"huge-int-version-{slug}", f"version {number}", "version: Must be greater than or equal to 0",
            doc=_with(ok, version=number))
        add(f, f"huge-int-custom-{slug}", f"a custom field of {number}", "integers must lie within ±2**53",
            doc=_with(ok, custom_fields={"score": number}))

    add(f, "duplicate-id", "id twice", "duplicate key 'id'", text='{"id": "c-1", "version": 1, "id": "c-2"}\n',
        level="text")
    add(f, "duplicate-version", "version twice", "duplicate key 'version'",
        text='{"id": "c-1", "version": 1, "version": 99}\n', level="text")
    add(f, "duplicate-custom-key", "a custom field twice", "duplicate key 'score'",
        text='{"id": "c-1", "version": 1, "custom_fields": {"score": 1, "score": 2}}\n', level="text")

    add(f, "empty-file", "an empty file", "the input is empty", raw=b"", level="cli")
    add(f, "blank-lines", "only blank lines", "the input is empty", raw=b"\n  \n\t\r\n", level="cli")
    for slug, text in {
        "truncated": '{"id": "c-1", "version": 1\n',
        "trailing-comma": '{"id": "c-1", "version": 1,}\n',
        "single-quotes": "{'id': 'c-1', 'version': 1}\n",
        "two-objects-one-line": '{"id": "c-1", "version": 1} {"id": "c-2", "version": 1}\n',
        "pretty-printed": '{\n  "id": "c-1",\n  "version": 1\n}\n',
        "json-array-of-snapshots": '[{"id": "c-1", "version": 1},\n{"id": "c-2", "version": 1}]\n',
        "comment-line": '# contacts\n{"id": "c-1", "version": 1}\n',
        "raw-nul-in-string": '{"id": "c-\u00001", "version": 1}\n',
        "raw-escape-in-string": '{"id": "c-1", "version": 1, "first_name": "\u001b[2J"}\n',
        "form-feed-line": "\u000c\n",
        "file-separator-line": "\u001c\n",
        "nul-line": "\u0000\n",
        "csv-line": "id,version\nc-1,1\n",
        "python-dict": "{'id': 'c-1', 'version': 1, 'tags': None}\n",
    }.items():
        add(f, f"syntax-{slug}", "not JSON Lines", "line 1: not valid JSON", text=text, level="text")
    add(f, "syntax-bad-line-after-good", "a good line, then a truncated one", "line 2: not valid JSON",
        text=_dumps(ok) + '\n{"id": "c-2", "vers\n', level="text")
    add(f, "depth-1500", "1,500 levels of nesting in a custom field", "nested too deeply to read",
        text='{"id": "c-1", "version": 1, "custom_fields": {"x": ' + "[" * 1500 + "]" * 1500 + "}}\n", level="text")

    for slug, doc in {"array": [ok], "string": "c-1", "number": 1, "null": None, "true": True, "empty-array": []}.items():
        add(f, f"top-{slug}", "a line that is not an object", "a contact snapshot must be a JSON object", doc=doc)
    add(f, "top-object-then-array", "a good line, then an array", "line 2: a contact snapshot must be a JSON object",
        lines=[ok, [second]])

    add(f, "empty-object", "{}", "id: Missing data for required field", doc={})
    add(f, "missing-id", "no id", "id: Missing data for required field", doc=_without(ok, "id"))
    add(f, "missing-version", "no version", "version: Missing data for required field", doc=_without(ok, "version"))
    for slug, value, message in [
        ("number", 1, "id: Not a valid string"), ("null", None, "id: Field may not be null"),
        ("list", ["c-1"], "id: Not a valid string"), ("object", {"id": "c-1"}, "id: Not a valid string"),
        ("boolean", True, "id: Not a valid string"), ("empty", "", "id: Length must be between 1 and 255"),
        ("256-chars", "i" * 256, "id: Length must be between 1 and 255"),
        ("nul", "c-1\u0000", "id: must not contain NUL characters"),
        ("nul-only", "\u0000", "id: must not contain NUL characters"),
        ("surrogate", "c-\ud800", "id: must not contain lone surrogates"),
    ]:
        add(f, f"id-{slug}", f"an id that is {slug.replace('-', ' ')}", message, doc=_with(ok, id=value))
    for slug, value, message in [
        ("string", "1", "version: Not a valid integer"), ("float", 1.5, "version: Not a valid integer"),
        ("whole-float", 1.0, "version: Not a valid integer"), ("boolean", True, "version: Not a valid integer"),
        ("null", None, "version: Field may not be null"), ("negative", -1, "version: Must be greater than or equal to 0"),
        ("list", [1], "version: Not a valid integer"), ("drop-table", DROP, "version: Not a valid integer"),
    ]:
        add(f, f"version-{slug}", f"a version that is {slug.replace('-', ' ')}", message, doc=_with(ok, version=value))

    for slug, key in HOSTILE_NAMES.items():
        add(f, f"unknown-field-{slug}", f"an unknown field named {key[:40]!r}", f"{_q(key) if not key.isprintable() else key}: Unknown field",
            doc=_with(ok, **{key: "x"}))
    add(f, "unknown-field-empty-name", "an unknown field with an empty name", "'': Unknown field", doc=_with(ok, **{"": 1}))
    add(f, "unknown-field-overlong", "an unknown field with a 1,001-character name: quoted, shortened",
        f"{_q('k' * 1001)}: Unknown field", doc=_with(ok, **{"k" * 1001: 1}))
    add(f, "unknown-fields-50", "50 unknown fields", "50 of them, e.g. 'u0', 'u1'",
        doc=_with(ok, **{f"u{i}": i for i in range(50)}))
    add(f, "unknown-fields-3", "3 unknown fields and a bad version: all four told", "u2: Unknown field",
        doc=_with(ok, version="1", u0=0, u1=1, u2=2))
    add(f, "unknown-field-now", "now (reserved for the engine) in a snapshot", "now: Unknown field", doc=_with(ok, now=1))

    for slug, field, value, message in [
        ("country-number", "country", 1, "country: Not a valid string"),
        ("country-list", "country", ["MY"], "country: Not a valid string"),
        ("country-object", "country", {"__proto__": "MY"}, "country: Not a valid string"),
        ("country-1001-chars", "country", "c" * 1001, "country: Longer than maximum length 1000"),
        ("country-nul", "country", "M\u0000Y", "country: must not contain NUL characters"),
        ("first-name-surrogate", "first_name", "Ann\udc00", "first_name: must not contain lone surrogates"),
        ("email-boolean", "email", False, "email: Not a valid string"),
        ("tags-string", "tags", "vip", "tags: Not a valid list"),
        ("tags-null", "tags", None, "tags: Field may not be null"),
        ("tags-object", "tags", {"0": "vip"}, "tags: Not a valid list"),
        ("tags-numbers", "tags", [1, 2], "tags: 0: Not a valid string"),
        ("tags-nested", "tags", [["vip"]], "tags: 0: Not a valid string"),
        ("tags-null-item", "tags", ["vip", None], "tags: 1: Field may not be null"),
        ("tags-nul-item", "tags", ["vip\u0000"], "tags: 0: must not contain NUL characters"),
        ("tags-surrogate-item", "tags", ["\ud83d"], "tags: 0: must not contain lone surrogates"),
        ("tags-1001", "tags", ["t"] * 1001, "tags: at most 1,000 items, found 1,001"),
        ("tags-1000-numbers", "tags", list(range(1000)), "49: Not a valid string.; … and 950 more"),
        ("channels-object", "channels", {"whatsapp": True}, "channels: Not a valid list"),
        ("custom-list", "custom_fields", [["score", 1]], "custom_fields: Not a valid mapping type"),
        ("custom-string", "custom_fields", "score=1", "custom_fields: Not a valid mapping type"),
        ("custom-null", "custom_fields", None, "custom_fields: Field may not be null"),
        ("custom-list-value", "custom_fields", {"score": [1]}, "must be a string, a number, a boolean or null"),
        ("custom-object-value", "custom_fields", {"score": {"__proto__": 1}}, "must be a string, a number, a boolean or null"),
        ("custom-nul-value", "custom_fields", {"note": "a\u0000"}, "must not contain NUL characters"),
        ("custom-surrogate-value", "custom_fields", {"note": "\udfff"}, "must not contain lone surrogates"),
        ("custom-1001-chars", "custom_fields", {"note": "n" * 1001}, "Longer than maximum length 1000"),
        ("custom-key-drop-table", "custom_fields", {DROP: 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-traversal", "custom_fields", {TRAVERSAL: 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-dotted", "custom_fields", {"a.b": 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-empty", "custom_fields", {"": 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-65-chars", "custom_fields", {"k" * 65: 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-nul", "custom_fields", {"a\u0000": 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-newline", "custom_fields", {"score\n": 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-key-unicode-digit", "custom_fields", {"score\u0663": 1}, "must match [A-Za-z0-9_]{1,64}"),
        ("custom-201", "custom_fields", {f"k{i}": i for i in range(201)}, "at most 200 custom fields, found 201"),
        ("created-at-number", "created_at", 1_700_000_000, "created_at: must be an ISO-8601 timestamp string"),
        ("created-at-no-offset", "created_at", "2026-01-31T09:30:00", "created_at: '2026-01-31T09:30:00' has no zone offset"),
        ("created-at-words", "created_at", "yesterday", "created_at: 'yesterday' is not an ISO-8601 timestamp"),
        ("created-at-month-13", "created_at", "2026-13-01T00:00:00Z", "is not an ISO-8601 timestamp"),
        ("created-at-trailing-nul", "created_at", "2026-01-31T09:30:00+08:00\u0000",
         "created_at: must be an ISO-8601 timestamp string"),
        ("created-at-escape", "created_at", "2026-01-31T09:30:00\u001b[2J+08:00", "created_at: must be an ISO-8601 timestamp string"),
        ("created-at-65-chars", "created_at", "2026-01-31T09:30:00.000000000000000000000000000000000000000000+08:00",
         "created_at: must be an ISO-8601 timestamp string"),
        ("created-at-drop-table", "created_at", DROP, "is not an ISO-8601 timestamp"),
        ("last-incoming-object", "last_incoming_message_at", {"$date": 1}, "last_incoming_message_at: must be an ISO-8601 timestamp string"),
    ]:
        add(f, f"field-{slug}", f"{field}: {slug.replace('-', ' ')}", message, doc=_with(ok, **{field: value}))
    add(f, "bad-line-after-good-lines", "three good lines, then a bad one (nothing is written)",
        "line 4: invalid contact snapshot 'c-4'", lines=[ok, second, _with(ok, id="c-3"), _with(ok, id="c-4", version="4")])
    add(f, "id-long-is-shortened", "a 255-character id with a bad version: the message quotes it shortened",
        "invalid contact snapshot 'iiii", doc=_with(ok, id="i" * 255, version=None))

    for slug, recipe, what, message, level in [
        ("nesting-100000", "snapshot_deep", "100,000 levels of nesting in a custom field", "nested too deeply to read", "text"),
        ("string-50mb-first-name", "snapshot_long_first_name", "a 50 MB first name",
         "first_name: Longer than maximum length 1000", "value"),
        ("string-50mb-id", "snapshot_long_id", "a 50 MB id", "id: Length must be between 1 and 255", "value"),
        ("string-50mb-key", "snapshot_long_key", "a 50 MB unknown field name", "Unknown field", "value"),
        ("string-50mb-custom-key", "snapshot_long_custom_key", "a 50 MB custom field key",
         "must match [A-Za-z0-9_]{1,64}", "value"),
        ("string-50mb-timestamp", "snapshot_long_timestamp", "a 50 MB timestamp",
         "created_at: must be an ISO-8601 timestamp string", "value"),
        ("lines-million-first-bad", "snapshot_million_lines", "a million lines, the first one bad",
         "line 1: a contact snapshot must be a JSON object", "value"),
    ]:
        add(f, slug, what, message, generated={"recipe": recipe}, level=level)
    # The command refuses these unparsed, by their count of values; the service, given them
    # parsed, by the schema's limits.
    too_many = "line 1: too large: more than 10,000 JSON values"
    for slug, recipe, what, message in [
        ("array-million-tags", "snapshot_million_tags", "a million tags", "tags: at most 1,000 items, found 1,000,000"),
        ("array-million-channel-numbers", "snapshot_million_channels", "a million numbers as channels",
         "channels: at most 1,000 items, found 1,000,000"),
        ("object-million-custom-fields", "snapshot_million_custom", "a million custom fields",
         "at most 200 custom fields, found 1,000,000"),
        ("object-million-unknown-fields", "snapshot_million_unknown", "a million unknown fields", "1,000,000 of them"),
        ("array-12000-tags", "snapshot_12000_tags", "12,000 tags: just over the count of values",
         "tags: at most 1,000 items, found 12,000"),
    ]:
        add(f, slug, what, too_many, expect_value=message, generated={"recipe": recipe})


# ----------------------------------------------------------------------------- imports


def imports(corpus: Corpus) -> None:
    add = corpus.add
    f = "imports"
    ok = EXPORT

    def segment(**changes: Any) -> dict[str, Any]:
        return _with(ok, segments=[_with(SEGMENT, **changes)])

    for slug, raw in {
        "utf8-invalid-ff": _dumps(ok).replace('"acme"', '"ac\u00ffme"').encode("latin-1"),
        "utf8-overlong-slash": _dumps(ok).encode().replace(b'"acme"', b'"..\xc0\xaf..\xc0\xafetc"'),
        "utf8-encoded-surrogate": _dumps(ok).encode().replace(b'"description": ""', b'"description": "\xed\xa0\x80"'),
        "utf16-le": "\ufeff".encode("utf-16-le") + _dumps(ok).encode("utf-16-le"),
    }.items():
        add(f, slug, "bytes that are not UTF-8", "not UTF-8", raw=raw, level="text")
    add(f, "utf8-bom", "a UTF-8 byte order mark", "byte order mark", raw=b"\xef\xbb\xbf" + _dumps(ok).encode(),
        level="text")
    for slug, token in {"nan": "NaN", "infinity": "Infinity", "minus-infinity": "-Infinity"}.items():
        add(f, f"token-{slug}", f"{token} as the format version", f"{token} is not a JSON number",
            text=_dumps(ok).replace('"format_version": 1', f'"format_version": {token}'), level="text")
    add(f, "token-nan-in-rule", "NaN inside a rule", "NaN is not a JSON number",
        text=_dumps(segment(rule={"==": [{"var": "custom_fields.score"}, 0]})).replace("0]}", "NaN]}"), level="text")
    add(f, "huge-float-version", "1e400 as the format version", "is out of range",
        text=_dumps(ok).replace('"format_version": 1', '"format_version": 1e400'), level="text")
    add(f, "huge-int-5000-digits", "a format version of 5,000 digits", "too many digits",
        text=_dumps(ok).replace('"format_version": 1', '"format_version": 1' + "0" * 5000), level="text")
    add(f, "huge-int-version-2-pow-64", "format version 2**64", "newer than this contact-segments understands",
        doc=_with(ok, format_version=2**64))
    add(f, "huge-int-in-rule", "2**64 in a rule", "integers beyond ±(2**53 - 1) lose precision",
        doc=segment(rule={"<": [{"var": "custom_fields.score"}, 2**64]}))
    add(f, "duplicate-top-key", "segments twice", "'segments'",
        text=_dumps(ok)[:-1] + ', "segments": []}', level="text")
    add(f, "duplicate-rule-key", "a duplicate key inside a rule", "'var'",
        text=_dumps(segment(rule={"!!": [{"var": "country"}]})).replace('{"var": "country"}', '{"var": "country", "var": "tags"}'),
        level="text")
    for slug, text in {"empty": "", "blank": " \n\t ", "truncated": _dumps(ok)[:-3], "trailing-comma": _dumps(ok)[:-1] + ",}",
                       "single-quotes": _dumps(ok).replace('"', "'"), "json-lines": _dumps(ok) + "\n" + _dumps(ok),
                       "raw-nul": _dumps(ok).replace('"description": ""', '"description": "\u0000"'),
                       "comment": "// export\n" + _dumps(ok), "yaml": "format: contact-segments/export\nsegments: []\n"}.items():
        add(f, f"syntax-{slug}", "not JSON", "not JSON", text=text, level="text")

    for slug, doc in {"array": [ok], "number": 1, "null": None, "true": True}.items():
        add(f, f"top-{slug}", "a top level that is not an object", "not an export", doc=doc)
    add(f, "top-string", "a JSON string (text: to the service, a string is JSON text)", "not an export",
        text='"contact-segments/export"', level="text")
    add(f, "top-empty-object", "{}", "not a contact-segments export", doc={})
    add(f, "top-snapshot", "a contact snapshot instead of an export", "not a contact-segments export", doc=SNAPSHOT)
    add(f, "top-rule", "a bare rule instead of an export", "not a contact-segments export", doc=RULE)

    for slug, key in HOSTILE_NAMES.items():
        add(f, f"unknown-top-{slug}", f"an unknown top-level field {key[:40]!r}", "unknown field",
            doc=_with(ok, **{key: 1}), expect_value=None)
        if slug in ("class", "proto", "constructor"):
            add(f, f"unknown-segment-{slug}", f"an unknown segment field {key!r}", f"segments[0].{key}",
                doc=segment(**{key: 1}))
            add(f, f"unknown-workspace-{slug}", f"an unknown workspace field {key!r}", f"workspace.{key}",
                doc=_with(ok, workspace={"id": "acme", "timezone": "UTC", key: 1}))
        elif slug in ("drop-table", "traversal", "escape-sequence"):  # not identifiers: quoted in the path
            add(f, f"unknown-segment-{slug}", f"an unknown segment field {key!r}", f"segments[0][{_q(key)}]",
                doc=segment(**{key: 1}))
            add(f, f"unknown-workspace-{slug}", f"an unknown workspace field {key!r}", f"workspace[{_q(key)}]",
                doc=_with(ok, workspace={"id": "acme", "timezone": "UTC", key: 1}))

    for slug, changes, message in [
        ("format-wrong", {"format": "contact-segments/import"}, "format"),
        ("format-number", {"format": 1}, "format"),
        ("format-drop-table", {"format": DROP}, "format"),
        ("version-newer", {"format_version": 2}, "newer than this contact-segments understands"),
        ("version-zero", {"format_version": 0}, "format versions start at 1"),
        ("version-negative", {"format_version": -1}, "format versions start at 1"),
        ("version-string", {"format_version": "1"}, "expected a whole number"),
        ("version-float", {"format_version": 1.5}, "expected a whole number"),
        ("version-whole-float", {"format_version": 1.0}, "expected a whole number"),
        ("version-boolean", {"format_version": True}, "expected a whole number"),
        ("version-null", {"format_version": None}, "format_version"),
        ("exported-at-words", {"exported_at": "yesterday"}, "expected an RFC 3339 date-time"),
        ("exported-at-number", {"exported_at": 1_770_000_000}, "exported_at"),
        ("exported-at-no-offset", {"exported_at": "2026-01-31T09:30:00"}, "zone offset"),
        ("exported-at-nul", {"exported_at": "2026-01-31T09:30:00Z\u0000"}, "exported_at"),
        ("workspace-string", {"workspace": "acme"}, "workspace"),
        ("workspace-null", {"workspace": None}, "workspace"),
        ("workspace-missing-timezone", {"workspace": {"id": "acme"}}, "workspace.timezone"),
        ("timezone-traversal", {"workspace": {"id": "acme", "timezone": TRAVERSAL}}, "unknown time zone"),
        ("timezone-absolute-path", {"workspace": {"id": "acme", "timezone": "/etc/localtime"}}, "unknown time zone"),
        ("timezone-relative-traversal", {"workspace": {"id": "acme", "timezone": "Asia/../../../etc/passwd"}}, "unknown time zone"),
        ("timezone-drop-table", {"workspace": {"id": "acme", "timezone": DROP}}, "unknown time zone"),
        ("timezone-nul", {"workspace": {"id": "acme", "timezone": "UTC\u0000"}}, "unknown time zone"),
        ("timezone-number", {"workspace": {"id": "acme", "timezone": 8}}, "workspace.timezone"),
        ("workspace-id-number", {"workspace": {"id": 1, "timezone": "UTC"}}, "workspace.id"),
        ("workspace-id-empty", {"workspace": {"id": "", "timezone": "UTC"}}, "workspace.id"),
        ("segments-missing", {"segments": None}, "segments"),
        ("segments-object", {"segments": {"0": SEGMENT}}, "segments"),
        ("segments-string", {"segments": "all"}, "segments"),
        ("segments-empty", {"segments": []}, "at least one segment"),
        ("segments-of-numbers", {"segments": [1, 2]}, "segments[0]"),
        ("segments-of-null", {"segments": [None]}, "segments[0]"),
        ("segments-nested-list", {"segments": [[SEGMENT]]}, "segments[0]"),
    ]:
        add(f, f"envelope-{slug}", f"the envelope: {slug.replace('-', ' ')}", message, doc=_with(ok, **changes))
    add(f, "envelope-missing-format", "no format, no format_version", "not a contact-segments export",
        doc={k: v for k, v in ok.items() if k not in ("format", "format_version", "segments")})

    for slug, changes, message in [
        ("name-number", {"name": 1}, "segments[0].name"),
        ("name-null", {"name": None}, "segments[0].name"),
        ("name-empty", {"name": "  "}, "a segment name must not be empty"),
        ("name-101-chars", {"name": "n" * 101}, "a segment name has at most 100 characters"),
        ("name-newline", {"name": "VIP\nAll"}, "control characters"),
        ("name-nul", {"name": "VIP\u0000"}, "control characters"),
        ("name-escape", {"name": "\u001b[2JVIP"}, "control characters"),
        ("name-surrogate", {"name": "VIP \ud800"}, "lone surrogates"),
        ("description-number", {"description": 1}, "segments[0].description"),
        ("description-null", {"description": None}, "segments[0].description"),
        ("description-nul", {"description": "a\u0000b"}, "a string must not contain NUL"),
        ("description-surrogate", {"description": "notes \ud800"}, "a string must not contain a lone surrogate"),
        ("rule-missing", {"rule": None}, "segments[0].rule"),
        ("rule-unknown-field-class", {"rule": {"!!": [{"var": "__class__"}]}}, "unknown field '__class__'"),
        ("rule-unknown-field-drop", {"rule": {"!!": [{"var": DROP}]}}, "unknown field"),
        ("rule-unknown-operator-constructor", {"rule": {"constructor": [True]}}, "unknown operator 'constructor'"),
        ("rule-unsupported-operator", {"rule": {"cat": ["a", "b"]}}, "not supported in segment rules"),
        ("rule-nul-literal", {"rule": {"==": [V, "M\u0000Y"]}}, "a string must not contain NUL"),
        ("rule-surrogate-literal", {"rule": {"==": [V, "\udbff"]}}, "a string must not contain a lone surrogate"),
        ("rule-wrong-type", {"rule": {"==": [V, 1]}}, "can be compared with a string or null, not a number"),
        ("rule-string", {"rule": "country is MY"}, "segments[0].rule"),
        ("rule-too-deep", {"rule": _nested(16, V, lambda x: {"!": [x]})}, "nested too deeply"),
        ("rule-too-many-values", {"rule": {"in": [V, ["MY"] * 1996]}}, "more than 2000 JSON values"),
        ("conditions-string", {"conditions": "country is MY"}, "segments[0].conditions"),
        ("conditions-wrong-category", {"conditions": {"op": "and", "conditions": [
            {"category": "__proto__", "field": "country", "operator": "is_equal_to", "value": "MY"}]}},
         "segments[0].conditions.conditions[0].category"),
        ("conditions-do-not-describe-rule", {"conditions": {"op": "and", "conditions": [
            {"category": "contact_field", "field": "country", "operator": "is_equal_to", "value": "SG"}]}},
         "the conditions do not describe the rule"),
        ("is-default-string", {"is_default": "true"}, "expected true or false"),
        ("is-default-number", {"is_default": 1}, "expected true or false"),
        ("is-default-null", {"is_default": None}, "segments[0].is_default"),
    ]:
        add(f, f"segment-{slug}", f"a segment: {slug.replace('-', ' ')}", message, doc=segment(**changes))
    add(f, "segment-missing-fields", "a segment with only a name", "segments[0].rule", doc=_with(ok, segments=[{"name": "VIP"}]))
    add(f, "segment-duplicate-names", "two segments named VIP and ' vip '", "duplicate name",
        doc=_with(ok, segments=[_with(SEGMENT, name="VIP"), _with(SEGMENT, name=" vip ")]))
    add(f, "segment-second-bad", "a good segment, then a bad one", "segments[1].rule",
        doc=_with(ok, segments=[SEGMENT, _with(SEGMENT, name="Other", rule={"var": TRAVERSAL})]))

    for slug, recipe, what, message, level in [
        ("nesting-100000-in-rule", "import_deep", "100,000 levels of nesting in a rule", "nested", "text"),
        ("string-50mb-description", "import_long_description", "a 50 MB description", "too large", "text"),
        ("size-just-over-16mib", "import_just_too_large", "16 MiB and one byte", "too large", "text"),
        ("array-million-segments", "import_million_segments", "a million segments", "at most 500 segments", "value"),
        ("segments-501", "import_501_segments", "501 segments", "at most 500 segments", "value"),
        ("array-million-values-in-rule", "import_million_values", "a million values in a rule",
         "more than 2000 JSON values", "value"),
        ("object-million-keys-in-segment", "import_million_keys", "a segment with a million unknown fields",
         "unknown field", "value"),
    ]:
        add(f, slug, what, message, generated={"recipe": recipe}, level=level)


# ----------------------------------------------------------------------------- recipes (huge documents)


def _rule_deep_arrays() -> bytes:
    return b"[" * DEEP + b"]" * DEEP


def _rule_deep_negations() -> bytes:
    return b'{"!": [' * DEEP + b"true" + b"]}" * DEEP


def _rule_long_literal() -> bytes:
    return b'{"==": [{"var": "country"}, "' + b"x" * MB50 + b'"]}'


def _rule_long_field() -> bytes:
    return b'{"!!": [{"var": "' + b"f" * MB50 + b'"}]}'


def _rule_million_values() -> bytes:
    return b'{"in": [{"var": "country"}, [' + b",".join([b'"MY"'] * MILLION) + b"]]}"


def _rule_million_keys() -> bytes:
    return ("{" + ",".join(f'"k{i}": 1' for i in range(MILLION)) + "}").encode()


def _rule_just_too_large() -> bytes:
    text = json.dumps({"in": ["x" * (65536 - 26), {"var": "email"}]}, separators=(",", ":"))
    assert len(text) == 65537
    return text.encode()


def _rule_padded() -> bytes:
    return b'{"!!":' + b" " * 70_000 + b'[{"var": "tags"}]}'


def _snapshot_deep() -> bytes:
    return b'{"id": "c-1", "version": 1, "custom_fields": {"x": ' + b"[" * DEEP + b"]" * DEEP + b"}}\n"


def _snapshot_long(field: str, value: bytes) -> bytes:
    return b'{"id": "c-1", "version": 1, "' + field.encode() + b'": "' + value + b'"}\n'


def _snapshot_long_first_name() -> bytes:
    return _snapshot_long("first_name", b"x" * MB50)


def _snapshot_long_id() -> bytes:
    return b'{"id": "' + b"i" * MB50 + b'", "version": 1}\n'


def _snapshot_long_key() -> bytes:
    return b'{"id": "c-1", "version": 1, "' + b"k" * MB50 + b'": 1}\n'


def _snapshot_long_custom_key() -> bytes:
    return b'{"id": "c-1", "version": 1, "custom_fields": {"' + b"k" * MB50 + b'": 1}}\n'


def _snapshot_long_timestamp() -> bytes:
    return _snapshot_long("created_at", b"2026-01-31T09:30:00" + b"0" * MB50 + b"+08:00")


def _snapshot_million_tags() -> bytes:
    return b'{"id": "c-1", "version": 1, "tags": [' + b",".join([b'"vip"'] * MILLION) + b"]}\n"


def _snapshot_12000_tags() -> bytes:
    return b'{"id": "c-1", "version": 1, "tags": [' + b",".join([b'"vip"'] * 12_000) + b"]}\n"


def _snapshot_million_channels() -> bytes:
    return ('{"id": "c-1", "version": 1, "channels": [' + ",".join(map(str, range(MILLION))) + "]}\n").encode()


def _snapshot_million_custom() -> bytes:
    fields = ",".join(f'"k{i}": {i}' for i in range(MILLION))
    return ('{"id": "c-1", "version": 1, "custom_fields": {' + fields + "}}\n").encode()


def _snapshot_million_unknown() -> bytes:
    return ('{"id": "c-1", "version": 1, ' + ",".join(f'"u{i}": {i}' for i in range(MILLION)) + "}\n").encode()


def _snapshot_million_lines() -> bytes:
    return b"[]\n" + b"{}\n" * (MILLION - 1)


def _export_text(segments: str, description: str = "") -> bytes:
    head = json.dumps({k: v for k, v in EXPORT.items() if k != "segments"})[:-1]
    return (head + ', "segments": ' + segments + "}").encode()


def _segment_text(rule: str = json.dumps(RULE), name: str = "VIP", extra: str = "") -> str:
    return f'{{"name": {json.dumps(name)}, "description": "", "rule": {rule}, "conditions": null, "is_default": false{extra}}}'


def _import_deep() -> bytes:
    return _export_text("[" + _segment_text("[" * DEEP + "]" * DEEP) + "]")


def _import_long_description() -> bytes:
    return _export_text("[" + _segment_text().replace('"description": ""', '"description": "' + "d" * MB50 + '"') + "]")


def _import_just_too_large() -> bytes:
    base = _export_text("[" + _segment_text().replace('"description": ""', '"description": "{}"') + "]")
    return base.replace(b'"{}"', b'"' + b"d" * (16 * 1024 * 1024 + 1 - len(base) + 2) + b'"')


def _import_million_segments() -> bytes:
    return _export_text("[" + ",".join(["0"] * MILLION) + "]")


def _import_501_segments() -> bytes:
    return _export_text("[" + ",".join(_segment_text(name=f"Segment {i}") for i in range(501)) + "]")


def _import_million_values() -> bytes:
    rule = '{"in": [{"var": "country"}, [' + ",".join(['"MY"'] * MILLION) + "]]}"
    return _export_text("[" + _segment_text(rule) + "]")


def _import_million_keys() -> bytes:
    extra = "".join(f', "{i}": 0' for i in range(MILLION))
    return _export_text("[" + _segment_text(extra=extra) + "]")


_RECIPES: dict[str, Callable[[], bytes]] = {
    name.removeprefix("_"): function
    for name, function in list(globals().items())
    if name.startswith(("_rule_", "_snapshot_", "_import_")) and name != "_snapshot_long"
}


def materialise(case: dict[str, Any], directory: Path) -> Path:
    """The case's document as a file: the stored one, or a generated one written into ``directory``
    (once: later calls reuse it)."""
    if case["file"] is not None:
        return HERE / case["file"]
    recipe = case["generated"]["recipe"]
    path = directory / f"{recipe}.{EXTENSIONS[case['family']]}"
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.write_bytes(_RECIPES[recipe]())
        partial.replace(path)
    return path


def load_manifest() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((HERE / "manifest.json").read_text("utf-8"))["cases"]
    return cases


# ----------------------------------------------------------------------------- writing


def build() -> Corpus:
    corpus = Corpus()
    rules(corpus)
    snapshots(corpus)
    imports(corpus)
    return corpus


def manifest_text(corpus: Corpus) -> str:
    counts = {family: sum(1 for c in corpus.cases if c["family"] == family) for family in FAMILIES}
    head = json.dumps({"about": "Hostile documents, each refused with a message containing `expect`; see generate.py.",
                       "counts": counts})
    cases = ",\n".join(json.dumps(case, ensure_ascii=True) for case in corpus.cases)
    return f'{head[:-1]}, "cases": [\n{cases}\n]}}\n'


def case_id(case: dict[str, Any]) -> str:
    """A short name: ``rules/utf8-in-key`` for a stored case, ``rules/rule_padded`` for a recipe."""
    if case["file"] is not None:
        return case["file"].rsplit(".", 1)[0]
    return f"{case['family']}/{case['generated']['recipe']}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="verify the stored files are current; write nothing")
    args = parser.parse_args(argv)
    corpus = build()
    wanted = {**corpus.files, "manifest.json": manifest_text(corpus).encode()}
    if args.check:
        stored = {
            str(path.relative_to(HERE)): path.read_bytes()
            for family in FAMILIES
            for path in sorted((HERE / family).glob("*"))
        }
        stored["manifest.json"] = (HERE / "manifest.json").read_bytes() if (HERE / "manifest.json").exists() else b""
        stale = sorted(name for name in wanted.keys() | stored.keys() if wanted.get(name) != stored.get(name))
        for name in stale:
            print(f"stale: {name}", file=sys.stderr)
        return 1 if stale else 0
    for family in FAMILIES:
        shutil.rmtree(HERE / family, ignore_errors=True)
        (HERE / family).mkdir()
    for name, data in wanted.items():
        (HERE / name).write_bytes(data)
    counts = json.loads(wanted["manifest.json"])["counts"]
    print(f"{len(corpus.cases)} cases: " + ", ".join(f"{n} {family}" for family, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
