"""Why a contact is, or is not, in a segment: the rule tree with each node's value."""

from __future__ import annotations

from typing import Any

from ..rules import apply
from ..rules.analysis import depends_on_now, fields_read
from ..rules.errors import ROOT, child_path
from ..storage import queries as q
from .errors import NotFound
from .segments import get_segment
from .uow import UnitOfWork


def explain_node(node: Any, data: dict[str, Any], path: str = ROOT) -> dict[str, Any]:
    """The node, its value for ``data``, and the same for each of its operands."""
    if isinstance(node, dict) and len(node) == 1:
        ((op, args),) = node.items()
        here = child_path(path, op)
        explained: dict[str, Any] = {"path": path, "op": op, "value": apply(node, data)}
        if op == "var":
            explained["field"] = args[0] if isinstance(args, list) else args
        else:
            operands = args if isinstance(args, list) else [args]
            explained["args"] = [explain_node(arg, data, child_path(here, i)) for i, arg in enumerate(operands)]
        return explained
    return {"path": path, "literal": node, "value": apply(node, data)}


def explain(uow: UnitOfWork, workspace_id: str, segment_id: Any, contact_id: str, *, now: float) -> dict[str, Any]:
    """The rule evaluated for one contact at ``now``: verdict, stored membership, tree, fields read."""
    with uow:
        segment = get_segment(uow, workspace_id, segment_id)
        view = q.load_contact_views(uow.session, workspace_id, [contact_id]).get(contact_id)
        if view is None:
            raise NotFound("contact", contact_id, workspace_id)
        data = {**view, "now": now}
        member = segment.id in q.memberships_of(uow.session, workspace_id, [contact_id]).get(contact_id, set())
        tree = explain_node(segment.rule, data)
        reads = sorted(fields_read(segment.rule)) + (["now"] if depends_on_now(segment.rule) else [])
        return {
            "segment_id": segment.id,
            "segment": segment.name,
            "contact_id": contact_id,
            "now": now,
            "matches": bool(apply({"!!": [segment.rule]}, data)),
            "member": member,
            "fields": {name: apply({"var": name}, data) for name in reads},
            "tree": tree,
        }
