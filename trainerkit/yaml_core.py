"""YAML as trainerkit reads it everywhere: the YAML 1.2 core schema.

Config files, ``--args-file`` files and ``--arg`` values are all read by
:class:`CoreSchemaLoader`, so a value means the same wherever it is written:

* booleans are only ``true`` and ``false`` (also ``True``/``TRUE``...);
  ``yes``, ``no``, ``on``, ``off``, ``y`` and ``n`` are text;
* null is ``null`` (``Null``, ``NULL``), ``~`` or nothing;
* integers are decimal (``010`` is ten), ``0o17`` or ``0x1F``;
* floats are ``1.5``, ``1e-3``, ``.inf``, ``-.Inf``, ``.nan``;
* everything else is text: ``1:30`` (no sexagesimals), ``2024-01-31`` (no
  implicit timestamps), ``1_000``.

This is what PyYAML's YAML 1.1 rules (``yaml.safe_load``) get wrong for users
of modern tools, where ``no`` would be ``False`` and ``1e-3`` a string. Explicit
tags (``!!str 3``, ``!!float 3``) still work and are checked against the same
rules. Merge keys (``<<: *defaults``) are kept.
"""

from __future__ import annotations

import re
from typing import IO, Any, Union

import yaml

NULL_TAG = "tag:yaml.org,2002:null"
BOOL_TAG = "tag:yaml.org,2002:bool"
INT_TAG = "tag:yaml.org,2002:int"
FLOAT_TAG = "tag:yaml.org,2002:float"
STR_TAG = "tag:yaml.org,2002:str"

# https://yaml.org/spec/1.2.2/#1023-core-schema
_NULL = re.compile(r"(?:~|null|Null|NULL|)\Z")
_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_INT = re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z")
_FLOAT = re.compile(
    r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"
)


class CoreSchemaLoader(yaml.SafeLoader):
    """PyYAML's safe loader with the YAML 1.2 core schema's implicit types
    instead of YAML 1.1's (see the module docstring)."""

    yaml_implicit_resolvers: dict = {}  # not SafeLoader's YAML 1.1 ones

    def construct_core_null(self, node: yaml.ScalarNode) -> None:
        self._check(node, _NULL)
        return None

    def construct_core_bool(self, node: yaml.ScalarNode) -> bool:
        return self._check(node, _BOOL).lower() == "true"

    def construct_core_int(self, node: yaml.ScalarNode) -> int:
        text = self._check(node, _INT)
        if text.startswith(("0o", "0x")):
            return int(text[2:], 8 if text[1] == "o" else 16)
        return int(text, 10)

    def construct_core_float(self, node: yaml.ScalarNode) -> float:
        text = self.construct_scalar(node)
        if _INT.match(text):
            return float(self.construct_core_int(node))
        self._check(node, _FLOAT)
        return self.construct_yaml_float(node)  # PyYAML's, for .inf and .nan

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        """A mapping, refusing a key written twice (PyYAML keeps the last one
        silently); keys brought in by a merge (``<<``) may be overridden."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"the key {key!r} is written twice, on line {seen[key].line + 1} and on line "
                        f"{key_node.start_mark.line + 1}; keep one",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)

    def _check(self, node: yaml.ScalarNode, pattern: "re.Pattern[str]") -> str:
        text = self.construct_scalar(node)
        if not pattern.match(text):
            kind = node.tag.rpartition(":")[2]
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is not a valid {kind} (YAML 1.2 core schema)", node.start_mark
            )
        return text


for _tag, _pattern, _first in (
    (NULL_TAG, _NULL, ["~", "n", "N", ""]),
    (BOOL_TAG, _BOOL, list("tTfF")),
    (INT_TAG, _INT, list("-+0123456789")),
    (FLOAT_TAG, _FLOAT, list("-+.0123456789")),
):
    CoreSchemaLoader.add_implicit_resolver(_tag, _pattern, _first)
CoreSchemaLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"<<\Z"), ["<"])
CoreSchemaLoader.add_constructor(NULL_TAG, CoreSchemaLoader.construct_core_null)
CoreSchemaLoader.add_constructor(BOOL_TAG, CoreSchemaLoader.construct_core_bool)
CoreSchemaLoader.add_constructor(INT_TAG, CoreSchemaLoader.construct_core_int)
CoreSchemaLoader.add_constructor(FLOAT_TAG, CoreSchemaLoader.construct_core_float)


def load_yaml(stream: Union[str, IO[str]]) -> Any:
    """One YAML document, read with the YAML 1.2 core schema.

    Raises:
        yaml.YAMLError: the text is not valid YAML (see :func:`describe_error`).
    """
    return yaml.load(stream, Loader=CoreSchemaLoader)  # noqa: S506 - a safe loader


def parse_plain_scalar(text: str) -> Any:
    """``text`` as one unquoted YAML scalar, taken whole: None, a bool, an int
    or a float when it spells one (surrounding blanks ignored), otherwise
    ``text`` itself, verbatim (``a: b`` and ``x # y`` stay text)."""
    stripped = text.strip()
    if not stripped and text:
        return text  # blanks are text, not null
    loader = CoreSchemaLoader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, stripped, (True, False))
        if tag == STR_TAG:
            return text
        return loader.construct_object(yaml.ScalarNode(tag, stripped))
    finally:
        loader.dispose()


def describe_error(exc: yaml.YAMLError) -> str:
    """A one-line description of a YAML error, with its line and column."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} (line {mark.line + 1}, column {mark.column + 1})"
    return str(exc).replace("\n", " ")
