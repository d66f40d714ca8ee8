"""``agent audit``, ``agent rotate-key`` and the expiry helpers of ``set`` and ``ls``.

Rules of this module: as ``agent.cli`` (secrets from a prompt or stdin, never
argv; failures are ``CliError``); commands talk to the agent through
``client.Client``.
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from typing import Any, Final

from client import Client, keyring_names

__all__ = ["register", "parse_duration", "expires_at", "print_ls", "SOON"]

# `agent ls` flags credentials that expire within this long
SOON: Final = 14 * 86400
_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdwy])")
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")

Add = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def parse_duration(text: str) -> float:
    """``90d``, ``12h``, ``1h30m`` -> seconds."""
    parts = _DURATION_RE.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        from agent.cli import CliError, Exit

        raise CliError(f"not a duration: {text!r} (use e.g. 30m, 12h, 90d, 1y)", Exit.USAGE)
    return sum(float(n) * _UNITS[u] for n, u in parts)


def expires_at(text: str | None, now: float | None = None) -> float | None:
    """``--expires``: a duration from now (``90d``) or a local date (``2026-03-31``)."""
    if text is None:
        return None
    if _DATE_RE.fullmatch(text):
        return time.mktime(time.strptime(text, "%Y-%m-%d"))
    return (time.time() if now is None else now) + parse_duration(text)


def _left(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def format_time(ts: float | None, fmt: str = "%Y-%m-%d %H:%M") -> str:
    if ts is None:
        return "-"
    try:
        return time.strftime(fmt, time.localtime(ts))
    except (OverflowError, OSError, ValueError):  # a timestamp no calendar holds
        return "?"


def expiry_mark(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    when = format_time(ts)
    if ts <= now:
        return f"{when} EXPIRED"
    if ts - now <= SOON:
        return f"{when} (in {_left(ts - now)})"
    return when


def display_names(entry: dict[str, Any]) -> tuple[str, str]:
    """Keyring entries as ``keyring:<service>`` / ``user:<name>``; others as they are."""
    platform, ctype = entry["platform"], entry["credential_type"]
    if not platform.startswith(keyring_names.PLATFORM_PREFIX):
        return platform, ctype
    meta = entry.get("metadata") or {}
    service = meta.get("keyring_service", keyring_names.decode_platform(platform))
    user = meta.get("keyring_username", keyring_names.decode_type(ctype))
    return (platform if service is None else f"keyring:{service}", ctype if user is None else f"user:{user}")


def print_ls(entries: list[dict[str, Any]]) -> None:
    now = time.time()
    rows = [(*display_names(e), e["updated"], expiry_mark(e["expires_at"], now)) for e in entries]
    width = max([24, *(len(r[0]) for r in rows)])
    print(f"{'PLATFORM':<{width}} {'TYPE':<16} {'UPDATED':<17} EXPIRES")
    for platform, ctype, updated, mark in rows:
        when = format_time(updated)
        print(f"{platform:<{width}} {ctype:<16} {when:<17} {mark}")


# --- agent audit ---------------------------------------------------------------------
def cmd_audit(args: argparse.Namespace) -> int:
    from agent.cli import _print_json

    since = None if args.since is None else time.time() - parse_duration(args.since)
    query: dict[str, Any] = {"limit": args.limit}
    if since is not None:
        query["since"] = since
    if args.platform is not None:
        query["platform"] = args.platform
    with Client() as c:
        rows: list[dict[str, Any]] = c.call("audit", query)
    if args.json:
        _print_json(rows)
        return 0
    if not rows:
        print("no audit records")
        return 0
    print(f"{'TIME':<19} {'OP':<10} {'CREDENTIAL':<32} {'PID':>7} {'UID':>6} {'RESULT':<16} {'TIMES':>5} EXECUTABLE")
    for r in rows:
        when = format_time(r["time"], "%Y-%m-%d %H:%M:%S")
        if r["platform"] is None:
            name = "-"
        else:
            name = "/".join(display_names({"platform": r["platform"], "credential_type": r["credential_type"]}))
        pid = "-" if r["pid"] is None else str(r["pid"])
        uid = "-" if r["uid"] is None else str(r["uid"])
        print(f"{when:<19} {r['op']:<10} {name:<32} {pid:>7} {uid:>6} {r['result']:<16} {r['count']:>5} "
              f"{r['exe'] or '-'}")
    return 0


# --- agent rotate-key -------------------------------------------------------------------
def cmd_rotate_key(args: argparse.Namespace) -> int:
    from agent.cli import read_secret

    with Client(timeout=120.0) as c:  # scrypt twice and a keystore round trip
        st = c.status()
        query: dict[str, str] = {}
        if st["key_source"] == "passphrase":
            query["passphrase"] = read_secret("Current passphrase: ")
            if args.new_passphrase:
                query["new_passphrase"] = read_secret("New passphrase: ", confirm=True)
        elif args.new_passphrase:
            from agent.cli import CliError

            raise CliError("--new-passphrase applies to passphrase vaults; this one keeps its key in the OS keystore")
        result = c.call("rotate_key", query)
    print(f"master key rotated; {result['credentials']} credentials re-encrypted (key source {result['key_source']})")
    return 0


def register(add: Add) -> None:
    p = add("audit", cmd_audit, "show who read or changed which credential (never values)")
    p.add_argument("--since", metavar="DURATION", help="only the last DURATION (e.g. 1h, 7d)")
    p.add_argument("--platform", help="only this platform")
    p.add_argument("--limit", type=int, default=1000, help="at most this many newest records (default 1000)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("rotate-key", cmd_rotate_key, "re-encrypt every credential under a new master key")
    p.add_argument("--new-passphrase", action="store_true", help="passphrase vaults: also change the passphrase")
