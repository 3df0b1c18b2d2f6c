"""Safe expressions over a JSON answer, for the ``json_field`` grader: ``category == "billing"``.

The text is parsed with Python's own parser (``ast``) and then walked by a small evaluator that
knows only literals, field access (``a.b``, ``a["b"]``, ``items[0]``), comparisons, ``and``/``or``/
``not``, unary minus and ``len()``. Nothing is ever handed to ``eval``: a name is a field of the
answer, not a Python variable, so there is nothing to escape to.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

_COMPARE: dict[type[ast.cmpop], Callable[[Any, Any], bool]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_FUNCTIONS: dict[str, Callable[[Any], Any]] = {"len": len, "lower": lambda s: str(s).lower()}
_LITERAL_NAMES = {"true": True, "false": False, "null": None}  # JSON spellings, besides Python's


class FieldMissing(LookupError):
    """The answer has no such field (the grade fails, saying which)."""


class Expr:
    """A compiled expression; ``evaluate(answer)`` reads fields of ``answer`` (parsed JSON)."""

    def __init__(self, text: str) -> None:
        try:
            tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as exc:
            raise ValueError(f"cannot parse expression {text!r}: {exc.msg}") from None
        self.text = text
        self._check(tree.body)
        self._body = tree.body

    def evaluate(self, answer: Any) -> Any:
        return self._eval(self._body, answer)

    def _check(self, node: ast.AST) -> None:
        """Refuse, before any answer is seen, every construct the evaluator does not know."""
        allowed = (
            ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare,
            ast.Name, ast.Load, ast.Attribute, ast.Subscript, ast.Constant, ast.List, ast.Tuple,
            ast.Call, *_COMPARE,
        )  # fmt: skip
        for child in ast.walk(node):
            if not isinstance(child, allowed):
                raise ValueError(f"{type(child).__name__} is not allowed in {self.text!r}")
            if isinstance(child, ast.Call) and not (
                isinstance(child.func, ast.Name)
                and child.func.id in _FUNCTIONS
                and len(child.args) == 1
                and not child.keywords
            ):
                raise ValueError(f"only {', '.join(_FUNCTIONS)}(x) can be called in {self.text!r}")

    def _eval(self, node: ast.AST, answer: Any) -> Any:
        match node:
            case ast.Constant(value=value):
                return value
            case ast.Name(id=name):
                if isinstance(answer, dict) and name in answer:
                    return answer[name]
                if name in _LITERAL_NAMES:
                    return _LITERAL_NAMES[name]
                raise FieldMissing(f"no field {name!r} in the answer")
            case ast.Attribute(value=inner, attr=attr):
                return _field(self._eval(inner, answer), attr)
            case ast.Subscript(value=inner, slice=key):
                return _field(self._eval(inner, answer), self._eval(key, answer))
            case ast.List(elts=items) | ast.Tuple(elts=items):
                return [self._eval(item, answer) for item in items]
            case ast.UnaryOp(op=ast.Not(), operand=operand):
                return not self._eval(operand, answer)
            case ast.UnaryOp(op=ast.USub(), operand=operand):
                return -self._eval(operand, answer)
            case ast.BoolOp(op=ast.And(), values=values):
                return all(self._eval(v, answer) for v in values)
            case ast.BoolOp(op=ast.Or(), values=values):
                return any(self._eval(v, answer) for v in values)
            case ast.Compare(left=left, ops=ops, comparators=rights):
                value = self._eval(left, answer)
                for op, right_node in zip(ops, rights, strict=True):
                    right = self._eval(right_node, answer)
                    if not _COMPARE[type(op)](value, right):
                        return False
                    value = right
                return True
            case ast.Call(func=ast.Name(id=name), args=[arg]):
                return _FUNCTIONS[name](self._eval(arg, answer))
        raise ValueError(f"cannot evaluate {ast.dump(node)}")  # unreachable after _check


def _field(container: Any, key: Any) -> Any:
    try:
        return container[key]
    except (KeyError, IndexError, TypeError):
        raise FieldMissing(f"no field {key!r} in {_short(container)}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
