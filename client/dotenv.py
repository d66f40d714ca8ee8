"""The ``.env`` file syntax, alone: what ``agent run`` and ``agent import dotenv`` both read.

Rules of this module: it imports nothing heavier than ``re`` (``agent run`` pays for every
module it loads before the command starts: benchmarks/run.py's ``agent run -- true`` row);
it never echoes a line of the file, which may be a bare pasted key.
"""

from __future__ import annotations

import re

from client import errors

TYPE_CHECKING = False  # as client.protocol: no typing at run time
if TYPE_CHECKING:
    from typing import Final

__all__ = ["SourceError", "parse_dotenv"]

_DOTENV_ASSIGN: Final = re.compile(r"[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_.]*)[ \t]*=[ \t]*")
_DOTENV_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


class SourceError(errors.AgentError, ValueError):
    """A source (file, stdin) that cannot be read or parsed; nothing from it was used."""

    code = "bad_source"
    default_message = "the source could not be read"


def parse_dotenv(text: str, label: str) -> list[tuple[str, str, int]]:
    """``(name, value, line)`` per assignment, as python-dotenv and shells read them.

    ``NAME=value``, ``export NAME=value``, ``'single'`` (literal) and ``"double"``
    (backslash escapes, may span lines) quotes, ``# comments``. The first line that
    is none of these refuses the whole file.
    """
    text = text.replace("\r\n", "\n")
    out: list[tuple[str, str, int]] = []
    pos, line, n = 0, 1, len(text)
    while pos < n:
        end = text.find("\n", pos)
        end = n if end < 0 else end
        stripped = text[pos:end].strip()
        if not stripped or stripped.startswith("#"):
            pos, line = end + 1, line + 1
            continue
        m = _DOTENV_ASSIGN.match(text, pos, end)
        if m is None:
            # never quote the line: it may be a bare pasted key
            raise SourceError(f"{label}, line {line}: expected NAME=VALUE; nothing was imported")
        first_line, i = line, m.end()
        if i < end and text[i] in "'\"":
            value, j, line = _quoted(text, i, line, label)
            end = text.find("\n", j)
            end = n if end < 0 else end
            rest = text[j:end].strip()
            if rest and not rest.startswith("#"):
                raise SourceError(
                    f"{label}, line {line}: unexpected text after the closing quote; nothing was imported"
                )
        else:
            comment = re.search(r"[ \t]#", text[i:end])
            value = text[i : i + comment.start() if comment else end].strip()
        out.append((m.group(1), value, first_line))
        pos, line = end + 1, line + 1
    return out


def _quoted(text: str, i: int, line: int, label: str) -> tuple[str, int, int]:
    """The value of the quoted string opening at ``i``, the index after it, and the current line."""
    quote, j, start_line = text[i], i + 1, line
    buf: list[str] = []
    while j < len(text):
        c = text[j]
        if c == quote:
            return "".join(buf), j + 1, line
        if c == "\\" and quote == '"' and j + 1 < len(text):
            nxt = text[j + 1]
            buf.append(_DOTENV_ESCAPES.get(nxt, "\\" + nxt))
            line += nxt == "\n"
            j += 2
            continue
        line += c == "\n"
        buf.append(c)
        j += 1
    raise SourceError(f"{label}, line {start_line}: the {quote} quote is never closed; nothing was imported")
