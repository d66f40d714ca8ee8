"""Concealing secret values in a stream of bytes (``agent run --mask``).

A value may arrive split across two reads, so ``Masker.feed`` holds back the end
of what it was given for as long as it could still be the start of a value: at most
``max(len(value)) - 1`` bytes, and none once no value can begin there. ``flush``
gives what is held back at the end of the stream. Every occurrence of any value is
replaced by ``CONCEALED``; the longest value wins where several match.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Final

__all__ = ["CONCEALED", "Masker"]

CONCEALED: Final = b"<concealed by agent>"


class Masker:
    def __init__(self, values: Iterable[str]) -> None:
        secrets = sorted({v.encode() for v in values if v}, key=len, reverse=True)
        self._secrets = secrets
        # longest first: at one position, the longest value that matches is taken
        self._pattern = re.compile(b"|".join(re.escape(s) for s in secrets)) if secrets else None
        self._longest = len(secrets[0]) if secrets else 0
        self._starts = frozenset(s[0] for s in secrets)
        self._held = b""

    def __repr__(self) -> str:
        return f"Masker(<{len(self._secrets)} values>)"

    def feed(self, data: bytes) -> bytes:
        """What of ``held + data`` is safe to write now, values concealed."""
        if self._pattern is None:
            return data
        buf = self._held + data
        # a match starting before `safe` lies wholly in buf, and no longer value
        # could still grow out of it: it is final
        safe = max(0, len(buf) - (self._longest - 1))
        out: list[bytes] = []
        pos = 0
        for m in self._pattern.finditer(buf):
            if m.start() >= safe:
                break
            out += (buf[pos : m.start()], CONCEALED)
            pos = m.end()
        keep = self._hold_from(buf, max(pos, safe))
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
        """The first index at or after ``start`` where a value could begin, given what follows."""
        for i in range(start, len(buf)):
            if buf[i] not in self._starts:
                continue
            rest = buf[i:]
            if any(s.startswith(rest) or rest.startswith(s) for s in self._secrets):
                return i
        return len(buf)
