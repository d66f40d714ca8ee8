"""The ``agent`` command.

Rules of this module:
- secrets never come from argv: values and passphrases are read from a hidden
  prompt, or from stdin when it is not a terminal;
- every failure is one line on stderr and an exit code from ``Exit``;
- commands talk to the agent through ``client.Client`` like any connector; only
  ``serve`` loads the daemon side (and with it keyring and cryptography).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from enum import IntEnum
from pathlib import Path
from typing import Any

import agent
from agent import cli_extra, service_units
from client import Client, _config, errors, paths
from client.validation import DEFAULT_TYPE, check_name

__all__ = ["main", "Exit"]


class Exit(IntEnum):
    OK = 0
    ERROR = 1
    USAGE = 2
    LOCKED = 3
    NO_AGENT = 4


START_TIMEOUT = 10.0


class CliError(Exception):
    def __init__(self, message: str, code: Exit = Exit.ERROR) -> None:
        super().__init__(message)
        self.code = code


# --- input -------------------------------------------------------------------------
def read_secret(prompt: str, *, confirm: bool = False) -> str:
    """A hidden prompt on a terminal; otherwise the first line of stdin."""
    if sys.stdin.isatty():
        value = getpass.getpass(prompt)
        if confirm and getpass.getpass("Repeat: ") != value:
            raise CliError("the two entries differ")
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value:
        raise CliError("nothing was entered (stdin is empty)")
    return value


def _meta_pairs(pairs: Sequence[str]) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--meta takes KEY=VALUE, got {pair!r}", Exit.USAGE)
        out[key] = value
    return out


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


_when = cli_extra.format_time


# --- daemon control ----------------------------------------------------------------
def _answers(path: Path) -> bool:
    try:
        with Client(path, timeout=2.0, autostart=False) as c:
            c.hello()
        return True
    except (errors.AgentUnavailable, errors.AgentTimeout, errors.ProtocolError):
        return False


def cmd_serve(args: argparse.Namespace) -> int:
    import logging

    from agent import daemon
    from agent.config import load_options

    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, _config.setting("log_level", args.log_level).upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    return daemon.serve(load_options(args))


def cmd_start(args: argparse.Namespace) -> int:
    path = paths.socket_path()
    if _answers(path):
        if not args.quiet:
            print(f"an agent is already running at {path}")
        return Exit.OK
    log_file = paths.log_path()
    paths.ensure_private_dir(log_file.parent)
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    command = [sys.executable, "-m", "agent", "serve", *(["--log-level", args.log_level] if args.log_level else [])]
    # LISTEN_* of a socket-activated parent (a notebook server, say) are not for this agent
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    child = subprocess.Popen(
        command, stdin=subprocess.DEVNULL, stdout=fd, stderr=fd, start_new_session=True, close_fds=True, env=env
    )
    os.close(fd)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if _answers(path):
            if not args.quiet:
                print(f"agent started at {path} (log: {log_file})")
            return Exit.OK
        code = child.poll()
        if code not in (None, 0):
            raise CliError(f"the agent exited with status {code}; see {log_file}")
        time.sleep(0.02)
    raise CliError(f"the agent did not answer within {START_TIMEOUT:g} s; see {log_file}", Exit.NO_AGENT)


def cmd_stop(args: argparse.Namespace) -> int:
    path = paths.socket_path()
    try:
        with Client(path, autostart=False) as c:
            pid = c.status()["pid"]
            c.stop()
    except errors.AgentUnavailable:
        print("no agent is running", file=sys.stderr)
        return Exit.OK
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    print(f"agent (pid {pid}) stopped")
    return Exit.OK


def cmd_status(args: argparse.Namespace) -> int:
    path = paths.socket_path()
    try:
        with Client(path, autostart=False) as c:
            st = c.status()
    except errors.AgentUnavailable:
        if args.json:
            _print_json({"running": False, "socket": str(path)})
        else:
            print(f"no agent is running at {path}")
        return Exit.NO_AGENT
    st["running"] = True
    if args.json:
        _print_json(st)
        return Exit.OK
    state = "not initialised (run `agent init`)" if not st["initialized"] else (
        "locked" + (" (by request)" if st["locked_by_user"] else "") if st["locked"] else "unlocked"
    )
    print(f"agent {st['version']} (protocol {st['protocol']}), pid {st['pid']}, up {st['uptime_s']:.0f} s")
    print(f"socket:      {st['socket']}")
    print(f"vault:       {st['vault']} ({st['credentials']} credentials, key source {st['key_source'] or '-'})")
    print(f"state:       {state}")
    print(f"auto-lock:   {_autolock_line(st)}")
    if st.get("socket_activated"):
        print("started by:  systemd socket activation")
    hardening = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in sorted(st["hardening"].items()))
    print(f"hardening:   {hardening}")
    print(f"event loop:  {st['loop']}")
    return Exit.OK


def _autolock_line(st: dict[str, Any]) -> str:
    parts = []
    for key, left, what in (("idle_timeout", "idle_left_s", "idle"), ("max_unlocked", "unlocked_left_s", "max")):
        if st.get(key):
            remaining = "" if st.get(left) is None else f" ({st[left]:.0f} s left)"
            parts.append(f"{what} {st[key]:g} s{remaining}")
    return ", ".join(parts) or "off"


# --- vault ------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    args.key_source = _config.setting("key_source", args.key_source)
    with Client() as c:
        if args.key_source == "passphrase":
            result = c.init("passphrase", read_secret("New passphrase: ", confirm=True))
        else:
            try:
                result = c.init(args.key_source)
            except errors.KeystoreUnavailable as e:
                if args.key_source == "keyring":
                    raise
                print(f"no working OS keystore ({e.message}); protecting the vault with a passphrase",
                      file=sys.stderr)
                result = c.init("passphrase", read_secret("New passphrase: ", confirm=True))
    where = f" ({result['backend']})" if result.get("backend") else ""
    print(f"vault created at {result['vault']}; master key in: {result['key_source']}{where}")
    return Exit.OK


def cmd_unlock(args: argparse.Namespace) -> int:
    with Client() as c:
        st = c.status()
        if not st["locked"]:
            print("already unlocked")
            return Exit.OK
        if st["key_source"] == "passphrase":
            c.unlock(read_secret("Passphrase: "))
        else:
            c.unlock()
    print("unlocked")
    return Exit.OK


def cmd_lock(args: argparse.Namespace) -> int:
    with Client(autostart=False) as c:
        c.lock()
    print("locked")
    return Exit.OK


def cmd_set(args: argparse.Namespace) -> int:
    value = read_secret(f"Value for {args.platform}/{args.type}: ")
    with Client() as c:
        c.store(args.platform, value, args.type, _meta_pairs(args.meta), validate=not args.no_validate,
                expires_at=cli_extra.expires_at(args.expires))
    print(f"stored {args.platform}/{args.type}")
    return Exit.OK


def cmd_get(args: argparse.Namespace) -> int:
    with Client() as c:
        value = c.get(args.platform, args.type)
    sys.stdout.write(value + "\n")
    return Exit.OK


def cmd_ls(args: argparse.Namespace) -> int:
    with Client() as c:
        entries = c.list()
    if args.json:
        _print_json(entries)
        return Exit.OK
    if not entries:
        print("no credentials stored")
        return Exit.OK
    cli_extra.print_ls(entries)
    return Exit.OK


def cmd_show(args: argparse.Namespace) -> int:
    with Client() as c:
        entry = c.metadata(args.platform, args.type)
    if args.json:
        _print_json(entry)
        return Exit.OK
    print(f"platform:  {entry['platform']}")
    print(f"type:      {entry['credential_type']}")
    print(f"created:   {_when(entry['created'])}")
    print(f"updated:   {_when(entry['updated'])}")
    print(f"expires:   {_when(entry['expires_at'])}")
    for key, value in sorted((entry.get("metadata") or {}).items()):
        print(f"meta.{key}: {value}")
    return Exit.OK


def cmd_rm(args: argparse.Namespace) -> int:
    with Client() as c:
        c.delete(args.platform, args.type)
    print(f"deleted {args.platform}/{args.type}")
    return Exit.OK


def cmd_validate(args: argparse.Namespace) -> int:
    value = read_secret(f"Value for {args.platform}: ")
    with Client() as c:
        result = c.call("validate", {"platform": args.platform, "value": value})
    if result["valid"]:
        print(f"valid for {args.platform}")
        return Exit.OK
    print(f"invalid for {args.platform}: {result['reason']}", file=sys.stderr)
    return Exit.ERROR


# --- parser -------------------------------------------------------------------------
def _name_arg(name: str) -> str:
    """argparse type: a legal name, else a usage error that does not echo the argument."""
    try:
        return check_name(name)
    except errors.BadRequest as e:
        raise argparse.ArgumentTypeError(e.message) from None


def _add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("platform", type=_name_arg, help="platform name, e.g. huggingface, wandb, runpod")
    p.add_argument("--type", type=_name_arg, default=DEFAULT_TYPE, help=f"credential type (default {DEFAULT_TYPE})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent", description="credential agent for API keys")
    parser.add_argument("--version", action="version", version=f"credential-agent {agent.__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(fn=fn)
        return p

    p = add("serve", cmd_serve, "run the agent in the foreground (for systemd/launchd)")
    p.add_argument("--log-level", default=None, choices=_config.LOG_LEVELS, help="default: info")
    p.add_argument("--idle-timeout", type=float, default=None, metavar="SECONDS",
                   help="lock after this long without credential use (0 = off)")
    p.add_argument("--max-unlocked", type=float, default=None, metavar="SECONDS",
                   help="lock this long after unlocking, whatever the use (0 = off)")
    p = add("start", cmd_start, "start the agent in the background (no-op when running)")
    p.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"])
    p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
    add("stop", cmd_stop, "stop the running agent")
    p = add("status", cmd_status, "show the agent's state")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("init", cmd_init, "create the vault and its master key")
    p.add_argument("--key-source", choices=["keyring", "passphrase"], default=None,
                   help="where the master key lives (default: the OS keystore if it works)")
    add("unlock", cmd_unlock, "unlock the vault (asks the passphrase for passphrase vaults)")
    add("lock", cmd_lock, "lock: drop the master key and every cached value")

    p = add("set", cmd_set, "store a credential (value from a hidden prompt or stdin)")
    _add_name(p)
    p.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="metadata (repeatable)")
    p.add_argument("--no-validate", action="store_true", help="store even if the platform's rule rejects it")
    p.add_argument("--expires", metavar="WHEN", help="expiry: a duration (90d, 12h) or a date (2026-03-31)")
    p = add("get", cmd_get, "print a credential's value")
    _add_name(p)
    p = add("ls", cmd_ls, "list stored credentials (never values)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("show", cmd_show, "show a credential's metadata (never its value)")
    _add_name(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add("rm", cmd_rm, "delete a credential")
    _add_name(p)
    p = add("validate", cmd_validate, "check a value (from stdin) against the platform's rule")
    p.add_argument("platform", type=_name_arg)
    from agent import cli_migrate  # here, not at the top: they import this module

    cli_migrate.register(add)
    service_units.add_parser(sub)
    cli_extra.register(add)
    return parser


def _exit_for(e: errors.AgentError) -> Exit:
    if isinstance(e, errors.AgentUnavailable):
        return Exit.NO_AGENT
    if isinstance(e, errors.Locked):
        return Exit.LOCKED
    return Exit.ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args))
    except CliError as e:
        print(f"agent: {e}", file=sys.stderr)
        return int(e.code)
    except errors.AgentError as e:
        print(f"agent: {e.message}", file=sys.stderr)
        return int(_exit_for(e))
    except (paths.InsecurePath, service_units.ServiceError) as e:
        print(f"agent: {e}", file=sys.stderr)
        return int(Exit.ERROR)
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return 130
