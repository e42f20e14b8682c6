"""Text for a terminal: data made inert before the CLI prints it.

Anything a caller sent can end up in a span, a record or an error message (a
session id, an exception's message, a URL path), and a terminal obeys the
control characters in what it is given: ``ESC[2J`` clears the screen, an OSC
sequence (``ESC]0;...BEL``) retitles the window or writes a hyperlink, a C1
byte such as ``0x9b`` starts a sequence on its own, a carriage return
overwrites the line before it, a bidi override reorders what follows. So every
such character in data is shown as its escape (``\\x1b``, ``\\x07``,
``\\x9b``, ``\\u202e``): nothing acts, and an operator still sees that
something was there. The rest of an escape sequence (``[2J``) is plain text
once its ESC is gone, so every kind of sequence is covered by the one rule.

:func:`inert` keeps newlines and tabs (a block of text, a traceback);
:func:`inert_line` escapes them too, for a value inside one line of a table or
tree, where a newline would forge a line of its own. :func:`inert_markup` is
:func:`inert_line` for rich, with rich's markup (``[bold]``) escaped as well;
:func:`inert_json` for JSON text, in JSON's own escapes.
"""

from __future__ import annotations

import logging

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(code: int) -> str:
    char = chr(code)
    if char in _NAMED:
        return _NAMED[char]
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


_ACTING = [
    *range(0x00, 0x20),       # C0: ESC, BEL, BS, CR, ...
    0x7F,                     # DEL
    *range(0x80, 0xA0),       # C1: CSI (0x9b), OSC (0x9d), ST (0x9c), ...
    0x061C, 0x200E, 0x200F,   # directional marks
    *range(0x202A, 0x202F),   # bidi embeddings and overrides
    *range(0x2066, 0x206A),   # bidi isolates
    0x2028, 0x2029,           # line and paragraph separators
    *range(0xD800, 0xE000),   # lone surrogates (from JSON): unprintable, and an encoder would raise on them
]
_LINE = str.maketrans({code: _escape(code) for code in _ACTING})
_BLOCK = str.maketrans({code: _escape(code) for code in _ACTING if chr(code) not in "\n\t"})
_JSON = str.maketrans({code: f"\\u{code:04x}" for code in _ACTING if chr(code) not in "\n\t"})


def inert(text: object) -> str:
    """``text`` (made a string) with every control character shown as its escape, newlines and tabs kept."""
    return str(text).translate(_BLOCK)


def inert_line(text: object) -> str:
    """``text`` (made a string) with every control character, newlines and tabs too, shown as its escape."""
    return str(text).translate(_LINE)


def inert_json(text: str) -> str:
    """JSON text with what :func:`inert` escapes written as JSON's ``\\uXXXX`` instead: the same JSON, inert.

    ``json.dumps(..., ensure_ascii=False)`` escapes C0 inside strings but leaves DEL, C1 and lone
    surrogates as they are.
    """
    return text.translate(_JSON)


def inert_markup(text: object) -> str:
    """:func:`inert_line` for a rich console: markup such as ``[bold]`` in data is printed, not obeyed."""
    from rich.markup import escape

    return escape(inert_line(text))


class InertFormatter(logging.Formatter):
    """A logging formatter whose output is :func:`inert`: log lines carry data too (a path, an error)."""

    def format(self, record: logging.LogRecord) -> str:
        return inert(super().format(record))
