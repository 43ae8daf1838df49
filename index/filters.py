"""Structured search filters: (column, operator, value) terms combined with AND / OR.

A filter is a small tree of plain values (`Term`, `All`, `Any`); `parse_filter` turns command-line
text such as ``age>=60 and (sex=F or labels contains AF)`` into that tree and never produces
SQL. `compile_filter` checks every column against the store's schema, coerces each value to the
column's type and emits SQL with ``?`` placeholders: identifiers come only from the schema and
values are always bound parameters, so no caller text reaches DuckDB as SQL.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Union

from ecg_atlas.errors import FilterError

from .schema import TYPE_LABELS, TYPE_TEXT, Column, coerce

#: Operators, as written in filters.
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "contains", "is null", "is not null")
_ORDERING = ("<", "<=", ">", ">=")
_UNARY = ("is null", "is not null")
#: Upper bound on terms in one filter (each becomes SQL text; keep a caller from sending megabytes).
MAX_TERMS = 256


@dataclass(frozen=True)
class Term:
    """``column op value``; `value` is a list for ``in`` / ``not in`` and unused for ``is null``."""

    column: str
    op: str
    value: object = None


@dataclass(frozen=True)
class All:
    """True when every part is true (an empty All allows everything)."""

    parts: tuple["Filter", ...]

    def __init__(self, parts: Iterable["Filter"]) -> None:
        object.__setattr__(self, "parts", tuple(parts))


@dataclass(frozen=True)
class Any:
    """True when at least one part is true (an empty Any allows nothing)."""

    parts: tuple["Filter", ...]

    def __init__(self, parts: Iterable["Filter"]) -> None:
        object.__setattr__(self, "parts", tuple(parts))


Filter = Union[Term, All, Any]


# ---------------------------------------------------------------------------------------------
# Compiling a filter tree to parameterised SQL


def compile_filter(tree: Filter, columns: Mapping[str, Column]) -> tuple[str, list[object]]:
    """SQL boolean expression and its parameters for `tree`, checked against `columns`.

    Raises FilterError naming the unknown column, the operator that does not apply to a column's
    type, or the value that does not fit.
    """
    params: list[object] = []
    count = [0]
    sql = _compile(tree, columns, params, count)
    return sql, params


def _compile(node: Filter, columns: Mapping[str, Column], params: list[object], count: list[int]) -> str:
    if isinstance(node, (All, Any)):
        if not node.parts:
            return "TRUE" if isinstance(node, All) else "FALSE"
        joiner = " AND " if isinstance(node, All) else " OR "
        return "(" + joiner.join(_compile(p, columns, params, count) for p in node.parts) + ")"
    if not isinstance(node, Term):
        raise FilterError(f"a filter is built from Term, All and Any; got {type(node).__name__}")
    count[0] += 1
    if count[0] > MAX_TERMS:
        raise FilterError(f"filter has more than {MAX_TERMS} terms; split the query")
    column = columns.get(node.column) if isinstance(node.column, str) else None
    if column is None:
        known = ", ".join(sorted(columns))
        raise FilterError(f"filter column {node.column!r} is not in this store; filterable columns: {known}")
    op = node.op.lower() if isinstance(node.op, str) else node.op
    if op == "==":
        op = "="
    if op not in OPERATORS:
        raise FilterError(f"filter operator {node.op!r} is not supported; use one of {', '.join(OPERATORS)}")
    ident = f'"{column.name}"'  # the name came from the schema, so it is a plain identifier
    if op in _UNARY:
        return f"({ident} {op.upper()})"
    if op == "contains":
        if column.type == TYPE_LABELS:
            params.append(_scalar(column, node.value, as_label=True))
            return f"list_contains({ident}, ?)"
        if column.type == TYPE_TEXT:
            params.append(coerce(column, node.value))
            return f"contains({ident}, ?)"
        raise FilterError(f"'contains' applies to label lists and text; {column.name!r} is {column.type}")
    if column.type == TYPE_LABELS:
        raise FilterError(f"{column.name!r} is a label list; filter it with 'contains' "
                          f"(e.g. {column.name} contains AF)")
    if op in ("in", "not in"):
        values = node.value
        if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, set, frozenset)):
            raise FilterError(f"'{op}' needs a list of values for {column.name!r}, got {values!r}")
        values = list(values)
        if not values:
            return "FALSE" if op == "in" else "TRUE"
        for v in values:
            params.append(_scalar(column, v))
        marks = ", ".join("?" for _ in values)
        return f"({ident} {'NOT IN' if op == 'not in' else 'IN'} ({marks}))"
    if op in _ORDERING and column.type == "BOOLEAN":
        raise FilterError(f"{column.name!r} is a boolean; compare it with = or !=")
    params.append(_scalar(column, node.value))
    return f"({ident} {op} ?)"


def _scalar(column: Column, value: object, as_label: bool = False) -> object:
    if value is None:
        raise FilterError(f"filter on {column.name!r} compares with null; use 'is null' / 'is not null'")
    if as_label:
        if not isinstance(value, str):
            raise FilterError(f"{column.name!r} holds text labels; {value!r} is not a string")
        return value
    return coerce(column, value)


# ---------------------------------------------------------------------------------------------
# Parsing command-line filter text into a tree (never into SQL)

_TOKEN_RE = re.compile(
    r"""\s*(?:
        (?P<str>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<op><=|>=|!=|<>|==|=|<|>)
      | (?P<punct>[()\[\],])
      | (?P<word>[^\s()\[\],=<>!'"]+)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Tok:
    kind: str  # "str" | "op" | "punct" | "word"
    text: str

    def is_word(self, *words: str) -> bool:
        return self.kind == "word" and self.text.lower() in words


def _tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if not m or m.end() == pos:
            raise FilterError(f"cannot read filter at character {pos + 1}: {text[pos:pos + 20]!r}")
        kind = m.lastgroup or ""
        value = m.group(kind)
        if kind == "str":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        tokens.append(_Tok(kind, value))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.i = 0

    def error(self, what: str) -> FilterError:
        return FilterError(
            f"cannot parse filter {self.text!r}: {what} (write terms like age>=60, sex=F, "
            f"labels contains AF, site in (a, b), note is null; combine with and / or / parentheses)"
        )

    def peek(self) -> _Tok | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise self.error("it ends too early")
        self.i += 1
        return tok

    def expect_punct(self, p: str) -> None:
        tok = self.take()
        if tok.kind != "punct" or tok.text != p:
            raise self.error(f"expected {p!r}, found {tok.text!r}")

    def parse(self) -> Filter:
        if not self.tokens:
            raise self.error("it is empty")
        tree = self.expr()
        if self.peek() is not None:
            raise self.error(f"unexpected {self.peek().text!r}")
        return tree

    def expr(self) -> Filter:
        parts = [self.conj()]
        while (tok := self.peek()) is not None and tok.is_word("or"):
            self.i += 1
            parts.append(self.conj())
        return parts[0] if len(parts) == 1 else Any(parts)

    def conj(self) -> Filter:
        parts = [self.atom()]
        while (tok := self.peek()) is not None and tok.is_word("and"):
            self.i += 1
            parts.append(self.atom())
        return parts[0] if len(parts) == 1 else All(parts)

    def atom(self) -> Filter:
        tok = self.take()
        if tok.kind == "punct" and tok.text == "(":
            inner = self.expr()
            self.expect_punct(")")
            return inner
        if tok.kind != "word":
            raise self.error(f"expected a column name, found {tok.text!r}")
        column = tok.text
        op = self.operator()
        if op in _UNARY:
            return Term(column, op)
        if op in ("in", "not in"):
            return Term(column, op, self.value_list())
        return Term(column, op, self.value())

    def operator(self) -> str:
        tok = self.take()
        if tok.kind == "op":
            return {"==": "=", "<>": "!="}.get(tok.text, tok.text)
        if tok.is_word("in", "contains"):
            return tok.text.lower()
        if tok.is_word("not"):
            if not self.take().is_word("in"):
                raise self.error("'not' must be followed by 'in'")
            return "not in"
        if tok.is_word("is"):
            nxt = self.take()
            if nxt.is_word("null"):
                return "is null"
            if nxt.is_word("not") and self.take().is_word("null"):
                return "is not null"
            raise self.error("'is' must be followed by 'null' or 'not null'")
        raise self.error(f"expected an operator ({', '.join(OPERATORS)}), found {tok.text!r}")

    def value(self) -> str:
        tok = self.take()
        if tok.kind in ("str", "word"):
            return tok.text
        raise self.error(f"expected a value, found {tok.text!r}")

    def value_list(self) -> list[str]:
        tok = self.take()
        if tok.kind != "punct" or tok.text not in "([":
            raise self.error("'in' needs a list such as (a, b, c)")
        close = ")" if tok.text == "(" else "]"
        values: list[str] = []
        while True:
            values.append(self.value())
            sep = self.take()
            if sep.kind == "punct" and sep.text == close:
                return values
            if not (sep.kind == "punct" and sep.text == ","):
                raise self.error(f"expected ',' or {close!r} in a list, found {sep.text!r}")


def parse_filter(text: str | Sequence[str]) -> Filter:
    """Filter tree from command-line text; several strings are joined with AND.

    Values stay text here; `compile_filter` converts them to each column's type.
    """
    if isinstance(text, str):
        return _Parser(text).parse()
    parts = [_Parser(t).parse() for t in text]
    return parts[0] if len(parts) == 1 else All(parts)
