"""Label and field selectors, parsed like ``k8s.io/apimachinery/pkg/labels`` / ``fields``.

Label selector grammar (comma separated requirements, whitespace ignored)::

    requirement := '!' key                      # DoesNotExist
                 | key                          # Exists
                 | key ('=' | '==' | '!=') value
                 | key ('in' | 'notin') '(' value (',' value)* ')'
                 | key ('>' | '<') integer

``parse_label_selector`` raises :class:`SelectorError` on malformed input, which
the server turns into a 400 BadRequest Status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

__all__ = [
    "SelectorError", "Requirement", "LabelSelector", "parse_label_selector",
    "selector_from_label_selector", "FieldSelector", "parse_field_selector",
    "validate_label_key", "validate_label_value",
]


class SelectorError(ValueError):
    pass


# --- label key / value validation (shared with validation.py) -----------------

_QUALIFIED_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]\Z")
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?\Z")
_DNS1123_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*\Z")

LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
                   "and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or "
                   "'12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")
QUALIFIED_NAME_MSG = ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
                      "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
                      "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')")
DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
                         "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used "
                         "for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')")


def validate_label_key(key: str) -> list[str]:
    """Problems with a qualified-name label key (empty list when valid)."""
    errs: list[str] = []
    if "/" in key:
        prefix, _, name = key.partition("/")
        if "/" in name:
            return ["a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start "
                    "and end with an alphanumeric character with an optional DNS subdomain prefix and '/' "
                    "(e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
                    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"]
        if not prefix:
            errs.append("prefix part must be non-empty")
        elif len(prefix) > 253:
            errs.append("prefix part must be no more than 253 characters")
        elif not _DNS1123_SUBDOMAIN_RE.match(prefix):
            errs.append("prefix part " + DNS1123_SUBDOMAIN_MSG)
    else:
        name = key
    if not name:
        errs.append("name part must be non-empty")
    elif len(name) > 63:
        errs.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME_RE.match(name):
        errs.append(QUALIFIED_NAME_MSG)
    return errs


def validate_label_value(value: str) -> list[str]:
    errs: list[str] = []
    if len(value) > 63:
        errs.append("must be no more than 63 characters")
    if not _LABEL_VALUE_RE.match(value):
        errs.append(LABEL_VALUE_MSG)
    return errs


# --- label selectors -----------------------------------------------------------

@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # "=", "==", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("=", "==", "in"):
            return self.key in labels and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        if op in ("gt", "lt"):
            if self.key not in labels:
                return False
            try:
                have = int(labels[self.key])
            except ValueError:
                return False
            want = int(self.values[0])
            return have > want if op == "gt" else have < want
        raise AssertionError(op)

    def __str__(self) -> str:
        op = self.operator
        if op == "exists":
            return self.key
        if op == "!":
            return "!" + self.key
        if op in ("in", "notin"):
            rendered = ",".join(sorted(set(self.values)))
            return f"{self.key} {op} ({rendered or ','})"
        if op == "gt":
            return f"{self.key}>{self.values[0]}"
        if op == "lt":
            return f"{self.key}<{self.values[0]}"
        return f"{self.key}{op}{self.values[0]}"


@dataclass(frozen=True)
class LabelSelector:
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


EVERYTHING = LabelSelector(())

# Tokens
_IDENT, _COMMA, _EQ, _DEQ, _NEQ, _BANG, _LPAREN, _RPAREN, _IN, _NOTIN, _GT, _LT, _END = (
    "identifier", "','", "'='", "'=='", "'!='", "'!'", "'('", "')'", "'in'", "'notin'", "'>'", "'<'", "end of string")
_SPECIAL = set("=!(),<> \t\n\r")
_VALUE_TOKENS = (_IDENT, _IN, _NOTIN)  # keywords are plain identifiers in value position


def _lex(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\n\r":
            i += 1
            continue
        two = text[i:i + 2]
        if two == "!=":
            tokens.append((_NEQ, two)); i += 2; continue
        if two == "==":
            tokens.append((_DEQ, two)); i += 2; continue
        simple = {"!": _BANG, "=": _EQ, ",": _COMMA, "(": _LPAREN, ")": _RPAREN, ">": _GT, "<": _LT}
        if ch in simple:
            tokens.append((simple[ch], ch)); i += 1; continue
        j = i
        while j < n and text[j] not in _SPECIAL:
            j += 1
        word = text[i:j]
        if word == "in":
            tokens.append((_IN, word))
        elif word == "notin":
            tokens.append((_NOTIN, word))
        else:
            tokens.append((_IDENT, word))
        i = j
    tokens.append((_END, ""))
    return tokens


class _Parser:
    def __init__(self, text: str):
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> tuple[str, str]:
        return self.tokens[self.pos]

    def take(self) -> tuple[str, str]:
        tok = self.tokens[self.pos]
        if tok[0] != _END:
            self.pos += 1
        return tok

    def expect(self, kind: str, what: str) -> str:
        tok = self.take()
        if tok[0] != kind:
            raise SelectorError(f"unable to parse requirement: found '{tok[1]}', expected: {what}")
        return tok[1]

    def parse(self) -> LabelSelector:
        reqs: list[Requirement] = []
        if self.peek()[0] == _END:
            return LabelSelector(())
        while True:
            reqs.append(self.requirement())
            kind, value = self.take()
            if kind == _END:
                break
            if kind != _COMMA:
                raise SelectorError(f"found '{value}', expected: ',' or 'end of string'")
        return LabelSelector(tuple(reqs))

    def value_list(self) -> list[str]:
        """Values of an in/notin set after '(' up to and including ')', like k8s parseIdentifiersList."""
        values: list[str] = []
        if self.peek()[0] == _RPAREN:
            self.take()
            return values
        while True:
            kind, text = self.take()
            if kind in _VALUE_TOKENS:
                values.append(text)
                nxt, ntext = self.peek()
                if nxt == _COMMA:
                    self.take()
                    if self.peek()[0] == _RPAREN:  # "(a,)"
                        self.take()
                        values.append("")
                        return values
                    continue
                if nxt == _RPAREN:
                    self.take()
                    return values
                raise SelectorError(f"unable to parse requirement: found '{ntext}', expected: ',' or ')'")
            if kind == _COMMA:  # "(,a)" / "(a,,b)" / "(,)"
                values.append("")
                if self.peek()[0] == _RPAREN:
                    self.take()
                    values.append("")
                    return values
                continue
            raise SelectorError(f"unable to parse requirement: found '{text}', expected: ',', or identifier")

    def requirement(self) -> Requirement:
        kind, _ = self.peek()
        if kind == _BANG:
            self.take()
            key = self.expect(_IDENT, "identifier")
            _check_key(key)
            return Requirement(key, "!")
        key = self.expect(_IDENT, "'!' or identifier")
        _check_key(key)
        kind, value = self.peek()
        if kind in (_END, _COMMA):
            return Requirement(key, "exists")
        if kind in (_EQ, _DEQ, _NEQ):
            self.take()
            op = {"=": "=", "==": "==", "!=": "!="}[value]
            nkind, nvalue = self.peek()
            if nkind in _VALUE_TOKENS:
                self.take()
                val = nvalue
            elif nkind in (_END, _COMMA):
                val = ""
            else:
                raise SelectorError(f"unable to parse requirement: found '{nvalue}', expected: identifier")
            _check_value(val)
            return Requirement(key, op, (val,))
        if kind in (_IN, _NOTIN):
            self.take()
            self.expect(_LPAREN, "'('")
            values = self.value_list()
            if not values:
                raise SelectorError("unable to parse requirement: for 'in', 'notin' operators, values set "
                                    "can't be empty")
            for v in values:
                _check_value(v)
            return Requirement(key, value, tuple(dict.fromkeys(values)))
        if kind in (_GT, _LT):
            self.take()
            val = self.expect(_IDENT, "identifier")
            if not re.fullmatch(r"-?[0-9]+", val):
                raise SelectorError(f"unable to parse requirement: for 'Gt', 'Lt' operators, the value must "
                                    f"be an integer: {val!r}")
            return Requirement(key, "gt" if kind == _GT else "lt", (val,))
        raise SelectorError(f"unable to parse requirement: found '{value}', expected: '=', '!=', '==', 'in', "
                            "'notin'")


def _check_key(key: str) -> None:
    errs = validate_label_key(key)
    if errs:
        raise SelectorError(f'unable to parse requirement: key: Invalid value: "{key}": {"; ".join(errs)}')


def _check_value(value: str) -> None:
    errs = validate_label_value(value)
    if errs:
        raise SelectorError(f'unable to parse requirement: values[0][value]: Invalid value: "{value}": '
                            f'{"; ".join(errs)}')


def parse_label_selector(text: str | None) -> LabelSelector:
    """Parse a ``labelSelector`` query string; ``None``/"" selects everything."""
    if not text:
        return EVERYTHING
    return _Parser(text).parse()


def selector_from_label_selector(spec: Mapping | None) -> LabelSelector:
    """Convert a ``metav1.LabelSelector`` dict (matchLabels / matchExpressions)."""
    if not spec:
        return EVERYTHING
    reqs: list[Requirement] = []
    for key, value in sorted((spec.get("matchLabels") or {}).items()):
        reqs.append(Requirement(key, "=", (value,)))
    ops = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
    for expr in spec.get("matchExpressions") or []:
        op = ops.get(expr.get("operator"))
        if op is None:
            raise SelectorError(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(Requirement(expr["key"], op, tuple(expr.get("values") or ())))
    return LabelSelector(tuple(reqs))


# --- field selectors -------------------------------------------------------------

@dataclass(frozen=True)
class FieldSelector:
    terms: tuple[tuple[str, str, str], ...] = ()  # (field, "="|"!=", value)

    def fields(self) -> list[str]:
        return [t[0] for t in self.terms]

    def matches(self, obj: Mapping, getter: Callable[[Mapping, str], str | None]) -> bool:
        for fld, op, value in self.terms:
            have = getter(obj, fld)
            have = "" if have is None else have
            if (have == value) != (op == "="):
                return False
        return True


def _split_unescaped(text: str, sep: str) -> Iterable[str]:
    buf: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            buf.append(text[i:i + 2])
            i += 2
            continue
        if ch == sep:
            yield "".join(buf)
            buf = []
        else:
            buf.append(ch)
        i += 1
    yield "".join(buf)


def _unescape(value: str) -> str:
    out, i = [], 0
    while i < len(value):
        if value[i] == "\\":
            if i + 1 >= len(value) or value[i + 1] not in "\\,=":
                raise SelectorError(f"invalid field selector: invalid escape sequence in {value!r}")
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_field_selector(text: str | None) -> FieldSelector:
    if not text:
        return FieldSelector(())
    terms: list[tuple[str, str, str]] = []
    for part in _split_unescaped(text, ","):
        if not part:
            continue
        m = re.match(r"^([^=!\\]+?)\s*(!=|==|=)(.*)$", part)
        if not m:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{part}'")
        fld, op, value = m.group(1).strip(), m.group(2), m.group(3)
        terms.append((fld, "!=" if op == "!=" else "=", _unescape(value)))
    return FieldSelector(tuple(terms))
