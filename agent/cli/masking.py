"""Concealing secret values in a stream of bytes (``agent run --mask``).

Masking guards against a value shown by accident (a debug print, a traceback, a
config dump on a shared screen or in a CI log); it is not a defence against the
command itself, which holds the value and can always write it in a form no masker
knows (reversed, encrypted, to ``/dev/tty``, over the network).

What it conceals, each replaced by ``CONCEALED``:
- every value as it is, and the forms it commonly takes in output: URL-encoded, and
  base64 (standard and URL-safe, at each of the three alignments a value can have in
  a longer encoded text: the groups made of the value's bytes alone);
- a value with terminal escape sequences (colours, cursor moves) between its
  characters: it looks whole on a screen, so it is matched whole;
- a value shorter than ``SHORT`` characters only where it stands as a word of its own,
  not inside a longer word.

A value may arrive split across two reads, so ``Masker.feed`` holds back the end of
what it was given for as long as it could still be the start of a value (escape
sequences inside it included), and none once no value can begin there. ``flush``
gives what is held back at the end of the stream. The longest form wins where
several match.
"""

from __future__ import annotations

import base64
import re
import urllib.parse
from collections.abc import Iterable
from typing import Final

__all__ = ["CONCEALED", "Masker", "forms"]

CONCEALED: Final = b"<concealed by agent>"
# CSI (ESC [ ... final byte) and two-byte escapes: what a terminal draws as nothing
_ESCAPE: Final = rb"(?:\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_])"
_ESCAPES: Final = re.compile(_ESCAPE)
# an escape sequence the stream has begun and not yet finished
_OPEN_ESCAPE: Final = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*)?\Z")
# a base64 form shorter than this is not masked: it could stand in ordinary text
MIN_ENCODED: Final = 12
# a value shorter than this is masked only as a whole word: inside a longer word it is
# most likely that word's own letters (``hello`` is not the value ``ell``)
SHORT: Final = 8


def _base64_cores(value: bytes) -> set[bytes]:
    """The base64 text the value's bytes alone decide, at offsets 0, 1 and 2 in a longer input."""
    cores = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for pad in range(3):
            text = encode(b"\0" * pad + value)
            start = 4 if pad else 0  # the first group holds pad bytes
            end = (pad + len(value)) // 3 * 4  # the last, partial group holds what follows
            if end - start >= MIN_ENCODED:
                cores.add(text[start:end])
    return cores


def forms(value: str) -> set[bytes]:
    """The byte strings that stand for ``value`` in output: itself, URL-encoded, base64."""
    raw = value.encode()
    found = {raw, urllib.parse.quote(value, safe="").encode(), urllib.parse.quote_plus(value).encode()}
    return found | _base64_cores(raw)


def _alternative(form: bytes) -> bytes:
    """The pattern of one form: escape sequences may sit between any two of its bytes; a
    short form (``hello``) only as a whole word, not inside one (``othello``)."""
    body = (_ESCAPE + b"*").join(re.escape(bytes([c])) for c in form)
    return body if len(form) >= SHORT else rb"(?<![A-Za-z0-9_])" + body + rb"(?![A-Za-z0-9_])"


class Masker:
    def __init__(self, values: Iterable[str]) -> None:
        secrets = sorted({f for v in values if v for f in forms(v)}, key=len, reverse=True)
        self._secrets = secrets
        # longest first: at one position, the longest form that matches is taken; escape
        # sequences may sit between any two of its bytes
        alternatives = [_alternative(s) for s in secrets]
        self._pattern = re.compile(b"|".join(alternatives)) if secrets else None
        self._longest = len(secrets[0]) if secrets else 0
        # how far back an unfinished form can begin: its bytes, and escape sequences between them
        self._span = self._longest * 4 + 256
        self._starts = frozenset(s[0] for s in secrets)
        self._held = b""

    def __repr__(self) -> str:
        return f"Masker(<{len(self._secrets)} forms>)"

    def feed(self, data: bytes) -> bytes:
        """What of ``held + data`` is safe to write now, values concealed."""
        if self._pattern is None:
            return data
        buf = self._held + data
        out: list[bytes] = []
        pos = 0
        keep = self._hold_from(buf, 0)
        for m in self._pattern.finditer(buf):
            if m.start() >= keep:
                break
            out += (buf[pos : m.start()], CONCEALED)
            pos = m.end()
        keep = self._hold_from(buf, pos)
        out.append(buf[pos:keep])
        self._held = buf[keep:]
        return b"".join(out)

    def flush(self) -> bytes:
        """The rest, at the end of the stream."""
        buf, self._held = self._held, b""
        if self._pattern is None:
            return buf
        return self._pattern.sub(CONCEALED, buf)

    def _hold_from(self, buf: bytes, start: int) -> int:
        """The first index at or after ``start`` where a form could begin that the bytes
        after it have not yet finished (nor ruled out)."""
        for i in range(max(start, len(buf) - self._span), len(buf)):
            if buf[i] not in self._starts:
                continue
            rest = buf[i:]
            if _OPEN_ESCAPE.search(rest):
                return i  # what the open escape sequence becomes decides
            seen = _ESCAPES.sub(b"", rest)
            if any(s.startswith(seen) and len(seen) < len(s) for s in self._secrets):
                return i
        return len(buf)
