"""Untrusted text made safe for a terminal: control characters become visible escapes.

Corpus text, questions posted to ``/feedback`` and file names can hold ANSI/OSC escape sequences
(``\\x1b]0;title\\x07``, ``\\x1b[2J``), carriage returns or line breaks that forge output lines, and
bidirectional overrides that reorder what a reader sees. Every CLI line that shows such text goes
through :func:`printable`; ``--json`` output does not (JSON already escapes control characters).

>>> printable("富士山\\x1b[2J\\n999\\tcorrect")
'富士山\\\\x1b[2J\\\\n999\\\\tcorrect'
>>> printable("plain text, 日本語")
'plain text, 日本語'
"""

from __future__ import annotations

import re

NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
CONTROL = re.compile(f"[\x00-\x1f\x7f-\x9f{BIDI_CONTROLS}\u2028\u2029]")
"""C0 and C1 controls, DEL, bidirectional marks/overrides/isolates and the Unicode line separators."""


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    if character in NAMED:
        return NAMED[character]
    code = ord(character)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\n``, ``\\x1b``, ``\\u202e``).

    Nothing else changes: printable characters of any script pass as they are, so the result is
    one terminal line that cannot move the cursor, change colours or the title, or fake a row.
    """
    return CONTROL.sub(_escape, text)
