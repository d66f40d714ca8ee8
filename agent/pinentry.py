"""Asking the user through a pinentry program, as gpg-agent does: a channel the asking program does not own.

A read that needs approval can be answered from ``agent approve`` in another terminal,
or, with ``pinentry`` in the config file, from a pinentry the agent starts itself: on
the terminal ``agent approve --here`` named (``pinentry-tty``, ``pinentry-curses``), or
on the display the agent runs on (``pinentry-gnome3``, ``pinentry-qt``). It shows which
program asks for which key and takes the vault's passphrase or approval PIN; Cancel
denies.

Rules of this module: it speaks the Assuan protocol's few commands pinentry needs
(``OPTION``, ``SETDESC``, ``SETPROMPT``, ``SETERROR``, ``SETTIMEOUT``, ``GETPIN``) over
the program's stdin and stdout; the secret typed lives in one string, returned to the
caller; nothing of it is logged; the program never outlives the question (it is killed
when the read is answered elsewhere, times out, or the agent stops).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Final

__all__ = ["MAX_LINE", "escape", "unescape", "ask"]

MAX_LINE: Final = 1000  # an Assuan line, as libassuan bounds it
_ENV: Final = (
    "PATH",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "XAUTHORITY",
    "DBUS_SESSION_BUS_ADDRESS",
)


def escape(text: str) -> str:
    """Text for an Assuan command's argument: ``%``, CR and LF as ``%25``, ``%0D``, ``%0A``."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def unescape(text: str) -> str:
    """A data line's text: ``%XX`` is the byte XX (the typed secret may hold ``%``)."""
    raw, i = bytearray(), 0
    data = text.encode("utf-8")
    while i < len(data):
        if data[i : i + 1] == b"%" and i + 3 <= len(data):
            try:
                raw.append(int(data[i + 1 : i + 3], 16))
                i += 3
                continue
            except ValueError:
                pass
        raw.append(data[i])
        i += 1
    return raw.decode("utf-8", "replace")


class _Session:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> str:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            raise ConnectionError("the pinentry program ended")
        return raw[:MAX_LINE].decode("utf-8", "replace").rstrip("\r\n")

    async def command(self, line: str) -> tuple[bool, str]:
        """Send one command; (True, data lines joined) on OK, (False, the error) on ERR."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode("utf-8")[:MAX_LINE] + b"\n")
        await self.proc.stdin.drain()
        data = []
        while True:
            reply = await self.line()
            if reply.startswith("D "):
                data.append(unescape(reply[2:]))
            elif reply == "OK" or reply.startswith("OK "):
                return True, "".join(data)
            elif reply.startswith("ERR"):
                return False, reply
            # S (status) and # (comment) lines carry nothing we need


async def ask(
    program: str,
    description: str,
    prompt: str,
    *,
    tty: str | None = None,
    error: str | None = None,
    timeout: float = 60.0,
) -> str | None:
    """What the user typed, or None when they cancelled, did not answer within ``timeout``,
    or the program could not be run (its log line says why)."""
    env = {k: os.environ[k] for k in _ENV if k in os.environ}
    args = [program, *(["--ttyname", tty] if tty else [])]
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # the agent's signals are not the pinentry's
    )
    session = _Session(proc)
    try:
        greeting = await session.line()
        if not greeting.startswith("OK"):
            return None
        setup = [f"OPTION ttyname={tty}", "OPTION ttytype=xterm"] if tty else []
        setup += [
            "SETTITLE credential-agent",
            f"SETDESC {escape(description)}",
            f"SETPROMPT {escape(prompt)}",
            f"SETTIMEOUT {max(1, int(timeout))}",
        ]
        if error:
            setup.append(f"SETERROR {escape(error)}")
        for command in setup:
            await session.command(command)  # an option a pinentry does not know is no reason to stop
        ok, typed = await session.command("GETPIN")
        return typed if ok and typed else None
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(Exception):
            await asyncio.wait([asyncio.ensure_future(proc.wait())], timeout=2)
