"""Training ids: DNS-1123 labels that carry the trainer's name.

Grammar (documented in ``docs/training-ids.md``)::

    id        = name-part SEP unique
    SEP       = "--"    when the name appears verbatim
              | "---"   when the name part is encoded
    unique    = a DNS-1123 label (random, or the caller's external id)

* A *verbatim* name is a DNS-1123 label without ``--``: lowercase ``a-z``,
  ``0-9`` and single ``-`` between them (``cluster``, ``gpu-a100``).
* Every other name (capitals, ``_``, ``.``, ``--``, unicode, a leading or
  trailing ``-``) is encoded with Bootstring (RFC 3492, the algorithm behind
  punycode) whose basic code points are ``a-z0-9``: the name's lowercase letters
  and digits stay readable in order, followed by ``-`` and the base-36 deltas
  that re-insert everything else. ``My_Trainer`` becomes ``yrainer-...``.
  An encoded part contains at most one ``-`` and never starts or ends with one.

Neither kind of name part ever contains ``--``, so the first ``--`` in an id
ends the name part, and a third ``-`` right after it says the name was encoded.
Parsing needs nothing but the id.
"""

from __future__ import annotations

import functools
import os
import random
import re
import secrets

from .errors import InvalidTrainingIdError

MAX_ID_LENGTH = 63
#: Random part of generated ids: 12 base-32 characters = 60 bits.
UNIQUE_LENGTH = 12
_UNIQUE_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
VERBATIM_SEPARATOR = "--"
ENCODED_SEPARATOR = "---"
#: Longest name part that still leaves room for a generated unique part.
MAX_NAME_PART_LENGTH = MAX_ID_LENGTH - len(VERBATIM_SEPARATOR) - UNIQUE_LENGTH

_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?\Z")
_BASIC = frozenset("abcdefghijklmnopqrstuvwxyz0123456789")

# Bootstring parameters (RFC 3492 section 5, with initial_n = 0 because our
# non-basic code points include ASCII such as "-", "_", "." and capitals).
_BASE, _TMIN, _TMAX, _SKEW, _DAMP = 36, 1, 26, 38, 700
_INITIAL_BIAS, _INITIAL_N = 72, 0
_DIGITS = "abcdefghijklmnopqrstuvwxyz0123456789"


def is_verbatim_name(name: str) -> bool:
    """True when ``name`` appears in ids exactly as written."""
    return bool(_DNS_LABEL.match(name)) and "--" not in name


def _adapt(delta: int, num_points: int, first_time: bool) -> int:
    delta = delta // _DAMP if first_time else delta // 2
    delta += delta // num_points
    k = 0
    while delta > ((_BASE - _TMIN) * _TMAX) // 2:
        delta //= _BASE - _TMIN
        k += _BASE
    return k + (((_BASE - _TMIN + 1) * delta) // (delta + _SKEW))


def _threshold(k: int, bias: int) -> int:
    if k <= bias:
        return _TMIN
    if k >= bias + _TMAX:
        return _TMAX
    return k - bias


def _bootstring_encode(text: str) -> str:
    code_points = [ord(c) for c in text]
    output = [c for c in text if c in _BASIC]
    handled = len(output)
    if output:
        output.append("-")
    n, delta, bias = _INITIAL_N, 0, _INITIAL_BIAS
    basic_count = handled
    while handled < len(code_points):
        m = min(c for c in code_points if c >= n and chr(c) not in _BASIC)
        delta += (m - n) * (handled + 1)
        n = m
        for c in code_points:
            if c < n or chr(c) in _BASIC:
                delta += 1
            if c == n and chr(c) not in _BASIC:
                q = delta
                k = _BASE
                while True:
                    t = _threshold(k, bias)
                    if q < t:
                        break
                    output.append(_DIGITS[t + (q - t) % (_BASE - t)])
                    q = (q - t) // (_BASE - t)
                    k += _BASE
                output.append(_DIGITS[q])
                bias = _adapt(delta, handled + 1, handled == basic_count)
                delta = 0
                handled += 1
        delta += 1
        n += 1
    return "".join(output)


def _bootstring_decode(encoded: str) -> str:
    if "-" in encoded:
        basic, _, extended = encoded.rpartition("-")
    else:
        basic, extended = "", encoded
    if any(c not in _BASIC for c in basic) or not extended:
        raise ValueError("malformed encoded name")
    output = list(basic)
    n, i, bias = _INITIAL_N, 0, _INITIAL_BIAS
    pos = 0
    while pos < len(extended):
        old_i, w, k = i, 1, _BASE
        while True:
            if pos >= len(extended):
                raise ValueError("truncated encoded name")
            digit = _DIGITS.find(extended[pos])
            pos += 1
            if digit < 0:
                raise ValueError("bad digit in encoded name")
            i += digit * w
            t = _threshold(k, bias)
            if digit < t:
                break
            w *= _BASE - t
            k += _BASE
        bias = _adapt(i - old_i, len(output) + 1, old_i == 0)
        n += i // (len(output) + 1)
        i %= len(output) + 1
        if n > 0x10FFFF or chr(n) in _BASIC:
            raise ValueError("encoded name decodes to an invalid code point")
        output.insert(i, chr(n))
        i += 1
    return "".join(output)


def encode_name(name: str) -> str:
    """The name part of ids for trainer ``name`` (verbatim or Bootstring)."""
    if is_verbatim_name(name):
        return name
    return _bootstring_encode(name)


def separator_for(name: str) -> str:
    """``--`` for verbatim names, ``---`` for encoded ones."""
    return VERBATIM_SEPARATOR if is_verbatim_name(name) else ENCODED_SEPARATOR


@functools.lru_cache(maxsize=256)
def id_prefix(name: str) -> str:
    """Everything before the unique part in ids of trainer ``name``."""
    return encode_name(name) + separator_for(name)


def check_trainer_name(name: object) -> str | None:
    """Return a problem description when ``name`` cannot name a trainer, else None."""
    if not isinstance(name, str) or not name:
        return f"a trainer name must be a non-empty string, got {name!r}"
    if any(0xD800 <= ord(c) <= 0xDFFF for c in name):
        return f"trainer name {name!r} contains a lone surrogate code point"
    prefix = id_prefix(name)
    room = MAX_ID_LENGTH - len(prefix)
    if room < UNIQUE_LENGTH:
        longest = MAX_NAME_PART_LENGTH if is_verbatim_name(name) else MAX_NAME_PART_LENGTH - 1
        return (
            f"trainer name {name!r} is too long for training ids: it encodes to "
            f"{len(encode_name(name))} characters ({encode_name(name)!r}) but at most "
            f"{longest} fit beside the {UNIQUE_LENGTH}-character unique part in a "
            f"{MAX_ID_LENGTH}-character id; choose a shorter name (lowercase letters, "
            "digits and '-' encode one character each)"
        )
    return None


#: Every pair of unique-part characters, by the 10 bits that choose it
#: (character 2j from the low 5 bits): six lookups make an id's unique part.
_PAIRS = tuple(_UNIQUE_ALPHABET[v & 31] + _UNIQUE_ALPHABET[v >> 5] for v in range(1024))


def new_training_id(trainer_name: str) -> str:
    """A fresh id for a training of ``trainer_name`` (60 random bits)."""
    bits = (_random or _start_random()).getrandbits(5 * UNIQUE_LENGTH)
    pairs = _PAIRS
    unique = (
        pairs[bits & 1023] + pairs[(bits >> 10) & 1023] + pairs[(bits >> 20) & 1023]
        + pairs[(bits >> 30) & 1023] + pairs[(bits >> 40) & 1023] + pairs[(bits >> 50) & 1023]
    )
    return id_prefix(trainer_name) + unique


# Ids need uniqueness, not secrecy: a Mersenne Twister seeded from the OS
# (reseeded in forked children) avoids a getrandom() system call per id.
# Created at the first id, not at import: importing trainerkit registers nothing.
_random: "random.Random | None" = None


def _start_random() -> random.Random:
    global _random
    # Two threads racing here each make and register their own generator;
    # both are reseeded after a fork, so either is safe to use.
    generator = random.Random(secrets.randbits(128))
    os.register_at_fork(after_in_child=lambda: generator.seed(secrets.randbits(128)))
    _random = generator
    return generator


def external_training_id(trainer_name: str, external_id: object) -> str:
    """The id of a training whose unique part the caller chose.

    Raises:
        InvalidTrainingIdError: ``external_id`` is not a DNS-1123 label or the
            whole id would be longer than 63 characters.
    """
    if not isinstance(external_id, str):
        raise InvalidTrainingIdError(
            f"external_training_id must be a string, got {type(external_id).__name__} "
            f"{external_id!r}"
        )
    if not _DNS_LABEL.match(external_id):
        raise InvalidTrainingIdError(
            f"external_training_id {external_id!r} is not a valid id part: use lowercase "
            "letters a-z, digits 0-9 and '-', starting and ending with a letter or digit "
            "(a DNS-1123 label, so it is safe as a Kubernetes name and a path segment)"
        )
    training_id = id_prefix(trainer_name) + external_id
    if len(training_id) > MAX_ID_LENGTH:
        room = MAX_ID_LENGTH - len(id_prefix(trainer_name))
        raise InvalidTrainingIdError(
            f"external_training_id {external_id!r} is {len(external_id)} characters; with "
            f"the prefix {id_prefix(trainer_name)!r} of trainer {trainer_name!r} at most "
            f"{room} fit in a {MAX_ID_LENGTH}-character id"
        )
    return training_id


def split_training_id(training_id: object) -> tuple[str, str]:
    """Split an id into ``(trainer_name, unique_part)``, from the id alone.

    Raises:
        InvalidTrainingIdError: ``training_id`` is not an id trainerkit makes.
    """
    if not isinstance(training_id, str):
        raise InvalidTrainingIdError(
            f"a training id must be a string, got {type(training_id).__name__} {training_id!r}"
        )
    problem = (
        f"{training_id!r} is not a trainerkit training id: ids look like "
        "'<trainer-name>--<unique>' (for example 'default--k3j9x7q2m4ab'), are at most "
        f"{MAX_ID_LENGTH} characters of a-z, 0-9 and '-'"
    )
    if len(training_id) > MAX_ID_LENGTH or not _DNS_LABEL.match(training_id):
        raise InvalidTrainingIdError(problem)
    name_part, sep, rest = training_id.partition(VERBATIM_SEPARATOR)
    if not sep or not name_part:
        raise InvalidTrainingIdError(problem)
    if rest.startswith("-"):
        unique = rest[1:]
        try:
            name = _bootstring_decode(name_part)
        except ValueError as exc:
            raise InvalidTrainingIdError(f"{problem} ({exc})") from None
        if is_verbatim_name(name) or _bootstring_encode(name) != name_part:
            raise InvalidTrainingIdError(problem)
    else:
        unique = rest
        name = name_part
    if not unique or not _DNS_LABEL.match(unique):
        raise InvalidTrainingIdError(problem)
    return name, unique


def trainer_name_from_id(training_id: str) -> str:
    """The name of the trainer that made ``training_id``."""
    return split_training_id(training_id)[0]
