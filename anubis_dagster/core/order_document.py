"""The bounds of an order's whole document, whatever its fields: size, nesting, and values no
column or IES can hold anywhere in it (NUL, lone surrogates, NaN/Infinity, integers beyond 64
bits), with the fast paths that tell a plain document from its text; and the copies of an order
a backend can store (`storable_order`, `storable_copy`). Apart from the field rules: these walk
the whole document, once per order, not per integration."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from anubis_dagster.core.field_rules import MAX_ID

MAX_DOCUMENT_CHARS = 256 * 1024  # a real order is ~2 KB; the payload is stored and re-read
MAX_DEPTH = 32
_SAFE_KEY = re.compile(r"[A-Za-z0-9_]{1,40}")
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Problem:
    field: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "message": self.message}


def _safe_key(key: object) -> str:
    """A key as it may appear in a reason: hostile keys (long, odd characters) are not echoed."""
    return key if isinstance(key, str) and _SAFE_KEY.fullmatch(key) else "?"


def scan_document(order: object) -> list[Problem]:
    """Whole-document bounds: size, depth, and values no column or IES can hold anywhere in it
    (NUL, lone surrogates, NaN/Infinity, integers beyond 64 bits). Iterative: a hostile document
    cannot exhaust the stack. Most documents are plain: `_plain_size` says so at a fifth of the
    cost, and only the others are walked again to name the paths at fault."""
    if _plain_size(order, 0, 0) >= 0:
        return []
    return _scan_paths(order)


def _scan_paths(order: object) -> list[Problem]:
    """`scan_document`'s full walk, naming the path of each problem."""
    problems: dict[str, str] = {}
    size = 0
    stack: list[tuple[object, str, int]] = [(order, "", 0)]
    while stack:
        node, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            problems.setdefault("order", f"order document is nested deeper than {MAX_DEPTH}")
            continue
        if isinstance(node, dict):
            size += 2
            for key, value in node.items():
                size += len(key) + 4 if isinstance(key, str) else 8
                name = _safe_key(key)
                stack.append((value, f"{path}.{name}" if path else name, depth + 1))
        elif isinstance(node, list):
            size += 2
            stack.extend((item, f"{path}[]", depth + 1) for item in node)
        elif isinstance(node, str):
            size += len(node) + 2
            field = path or "order"
            if "\x00" in node:
                problems.setdefault(field, "holds a NUL character")
            elif not node.isascii() and _SURROGATE.search(node):
                problems.setdefault(field, "holds an invalid Unicode character (lone surrogate)")
        elif isinstance(node, float):
            size += 8
            if not math.isfinite(node):
                problems.setdefault(path or "order", "must be a finite number")
        elif isinstance(node, int) and not isinstance(node, bool):
            size += 8
            if not -MAX_ID - 1 <= node <= MAX_ID:
                problems.setdefault(path or "order", "number does not fit 64 bits")
        else:
            size += 4
        if size > MAX_DOCUMENT_CHARS:
            problems.setdefault(
                "order", f"order document is larger than {MAX_DOCUMENT_CHARS} characters"
            )
            break
    return [Problem(f, m) for f, m in problems.items()]


def _plain_size(node: object, depth: int, size: int) -> int:
    """The size `scan_document` counts for `node` (added to `size`), or -1 when it might find a
    problem in it (or the node is not a plain JSON type). Recursive but bounded: it gives up
    below `MAX_DEPTH`, so a hostile document cannot exhaust the stack."""
    if depth > MAX_DEPTH:
        return -1
    kind = type(node)
    if kind is str:
        size += len(node) + 2  # type: ignore[arg-type]
        if "\x00" in node or (not node.isascii() and _SURROGATE.search(node)):  # type: ignore
            return -1
    elif kind is dict:
        size += 2
        for key, value in node.items():  # type: ignore[attr-defined]
            size += len(key) + 4 if type(key) is str else 8
            size = _plain_size(value, depth + 1, size)
            if size < 0:
                return -1
    elif kind is int:
        size += 8
        if not -MAX_ID - 1 <= node <= MAX_ID:  # type: ignore[operator]
            return -1
    elif kind is list:
        size += 2
        for item in node:  # type: ignore[attr-defined]
            size = _plain_size(item, depth + 1, size)
            if size < 0:
                return -1
    elif kind is float:
        size += 8
        if not math.isfinite(node):  # type: ignore[arg-type]
            return -1
    elif node is None or kind is bool:
        size += 4
    else:
        return -1
    return size if size <= MAX_DOCUMENT_CHARS else -1


_SURROGATE_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")  # NUL or a surrogate, escaped
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789E", b"000000000e")  # one byte per character
_BIG_EXPONENT = re.compile(rb"0e\+?000+(?:[,}\]\s]|$)")  # in a text whose digits are all "0"


def long_number_in(text: str | bytes | bytearray) -> bool:
    """Whether a JSON text holds 19 digits in a row (a number that may not fit 64 bits, or a
    string of digits: either way, the caller takes its careful path). A translation and a
    search, ten times quicker than the regex `[0-9]{19}`."""
    raw = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    return b"0" * 19 in raw.translate(_DIGITS_AS_ZERO)


def plain_json_text(text: object) -> bool:
    """Whether the document parsed from the JSON text `text` is one `scan_document` finds
    nothing in, told from the text alone (a real order's text in a few microseconds, against
    tens for the walk). True only when it cannot find anything: no NUL or surrogate escape and
    no surrogate, no number beyond 64 bits (19 digits in a row) or beyond a double (an
    exponent of 3 digits), no more than `MAX_DEPTH` brackets in all, and a text short enough
    that the document's size (at most 8 per character of text) is within bounds. NaN and
    Infinity never parse (intake refuses them)."""
    if not isinstance(text, str) or len(text) * 8 > MAX_DOCUMENT_CHARS:
        return False
    if text.count("{") + text.count("[") > MAX_DEPTH:
        return False
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        return False
    try:  # a lone surrogate cannot be encoded: quicker than searching a non-ASCII text for one
        digits = text.encode("utf-8").translate(_DIGITS_AS_ZERO)
    except UnicodeEncodeError:
        return False
    if b"0" * 19 in digits:
        return False
    # an exponent of 3 digits ends a number (not a hex string such as a UUID's "…a6e397")
    return not (
        (b"0e000" in digits or b"0e+000" in digits) and _BIG_EXPONENT.search(digits) is not None
    )


def has_unstorable_values(scan: list[Problem]) -> bool:
    """Whether a document's scan found values no backend stores as they are (NUL, a lone
    surrogate, a number beyond 64 bits), as opposed to the whole document's bounds."""
    return any(not p.message.startswith("order document is") for p in scan)


def storable_order(order: dict[str, object]) -> dict[str, object]:
    """A valid order with the values no backend stores (found only in fields nobody reads:
    those that are read were validated) made storable: NUL and lone surrogates replaced by
    U+FFFD, non-finite numbers and integers beyond 64 bits dropped (null). Everything else,
    the fields an IES receives among them, is kept as it is."""

    def copy(node: object) -> object:
        if isinstance(node, dict):
            return {k: copy(v) for k, v in node.items()}
        if isinstance(node, list):
            return [copy(item) for item in node]
        if isinstance(node, str):
            if "\x00" in node or (not node.isascii() and _SURROGATE.search(node)):
                node = _SURROGATE.sub("\ufffd", node.replace("\x00", "\ufffd"))
            return node
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, int) and not -MAX_ID - 1 <= node <= MAX_ID:  # bools are in range
            return None
        return node

    result = copy(order)
    assert isinstance(result, dict)
    return result


#: What is kept of an invalid order: enough for an operator to see what was wrong, bounded so
#: any column and the JSON column of both backends accept it (the original stays at the source).
STORED_STRING_CHARS = 200
_STORED_FIELD_CHARS = {"origin": 40, "checkout_step": 40, "base_user.full_name": 80}


def storable_copy(order: dict[str, object]) -> dict[str, object]:
    """A copy of an invalid `order` that any backend stores: strings cut to a few hundred
    characters (fields that reach a column to its length), NUL and lone surrogates replaced,
    NaN/Infinity and integers beyond 64 bits dropped, nesting and size bounded."""
    budget = [MAX_DOCUMENT_CHARS]

    def clean_text(text: str, limit: int) -> str:
        text = text[:limit].replace("\x00", "\ufffd")
        if not text.isascii() and _SURROGATE.search(text):  # rare: one character at a time
            text = "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in text)
        budget[0] -= len(text) + 2
        return text

    def copy(node: object, path: str, depth: int) -> object:
        if budget[0] <= 0 or depth > MAX_DEPTH:
            return None
        if isinstance(node, dict):
            out: dict[str, object] = {}
            for key, value in node.items():
                if budget[0] <= 0:
                    break
                name = clean_text(str(key), STORED_STRING_CHARS)
                out[name] = copy(value, f"{path}.{name}" if path else name, depth + 1)
            return out
        if isinstance(node, list):
            return [copy(item, f"{path}[]", depth + 1) for item in node[:1000] if budget[0] > 0]
        if isinstance(node, str):
            return clean_text(node, _STORED_FIELD_CHARS.get(path, STORED_STRING_CHARS))
        budget[0] -= 8
        if isinstance(node, float) and not math.isfinite(node):
            return None
        if isinstance(node, int) and not isinstance(node, bool) and abs(node) > MAX_ID:
            return None
        return node

    result = copy(order, "", 0)
    return result if isinstance(result, dict) else {}
