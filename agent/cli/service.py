"""``agent service install | uninstall | status``: run the agent at login.

What the units say and where they go is ``agent.service_units`` (library code, no
output); this module decides what to write and run, and says so: every file written
and every manager command run is printed, and where the service manager cannot be
reached (containers, ssh sessions without a user bus, tests) the one command left
to run. Install and uninstall are idempotent.

``agent.service_units`` (subprocess, dataclasses, pathlib) is imported by these
commands only, and its ``ServiceError`` leaves them as a ``CliError``.
"""

from __future__ import annotations

import argparse
import functools

from agent.cli._common import CliError, Command, Subcommands, add_command, add_group
from client import paths

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agent import service_units as units

# agent.service_units.MANAGERS, named here so that building the parser loads no
# service code (tests/system/test_footprint.py checks that the two agree)
MANAGERS = ("systemd", "launchd", "schtasks")

__all__ = ["register"]


def _units_command(fn: Command) -> Command:
    """``fn`` with ``agent.service_units`` imported and its errors reported as CliError."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        from agent import service_units

        try:
            return fn(args)
        except service_units.ServiceError as e:
            raise CliError(str(e)) from None

    return run


def _plan(args: argparse.Namespace) -> units.Plan:
    from agent import service_units as units

    return units.plan(args.manager or units.default_manager())


def _run(command: list[str], *, check: bool) -> bool:
    from agent import service_units as units

    print("$ " + " ".join(command))
    done = units.run(command)
    output = (done.stdout + done.stderr).strip()
    if output:
        print(output)
    if check and done.returncode != 0:
        raise CliError(f"`{' '.join(command)}` exited with status {done.returncode}")
    return done.returncode == 0


def _shell(commands: list[list[str]]) -> str:
    import shlex

    return " && ".join(shlex.join(c) for c in commands)


def cmd_install(args: argparse.Namespace) -> int:
    from agent import service_units as units

    p = _plan(args)
    changed = [path for path, text in p.files.items() if units.read(path) != text]
    for path, text in p.files.items():
        if args.dry_run:
            print(f"--- would write {path}{'' if path in changed else ' (unchanged)'}\n{text}", end="")
        elif path in changed:
            units.write(path, text)
            print(f"wrote {path}")
        else:
            print(f"unchanged {path}")
    if p.manager == "launchd" and not args.dry_run:
        from pathlib import Path

        # launchd opens the log file but makes no directory
        units.launchd_log(Path.home(), paths.app_name()).parent.mkdir(parents=True, exist_ok=True)
    if args.dry_run:
        print(f"would run: {_shell(p.enable)}")
        return 0
    why = units.manager_reachable(p.manager)
    if why is not None:
        print(f"{p.manager} cannot be reached ({why}); the one command left to run is:")
        print(f"  {_shell(p.enable)}")
        return 0
    if p.manager == "launchd":
        if units.launchd_loaded():
            if not changed:
                print(f"{units.label()} is already loaded")
                return 0
            _run(p.disable[0], check=False)  # unload the old definition before loading the new one
        _run(p.enable[0], check=True)
        return 0
    for c in p.enable:  # daemon-reload and enable --now are idempotent
        _run(c, check=True)
    if p.manager == "systemd":
        print(f"the agent starts on the first connection to {units.listen_stream()} (systemd expands %t)")
        if changed:
            print(f"a running agent keeps its old unit until `systemctl --user restart {units.unit_name()}.service`")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from agent import service_units as units

    p = _plan(args)
    present = [path for path in p.files if path.exists()] + [w for w in p.wants if w.is_symlink()]
    if not present:
        print("nothing installed")
        return 0
    if args.dry_run:
        print(f"would run: {_shell(p.disable[:1])}")
        for path in present:
            print(f"would remove {path}")
        return 0
    why = units.manager_reachable(p.manager)
    if why is None:
        _run(p.disable[0], check=False)  # fine when not loaded
    for path in present:
        path.unlink(missing_ok=True)
        print(f"removed {path}")
    if why is None:
        for c in p.disable[1:]:
            _run(c, check=False)
    elif p.manager == "systemd":
        print(f"{p.manager} cannot be reached ({why}); if a user manager runs, the one command left is:")
        print(f"  {_shell(p.disable[1:])}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from agent import service_units as units

    p = _plan(args)
    ok = True
    for path, text in p.files.items():
        current = units.read(path)
        if current is None:
            state, ok = "not installed", False
        elif current == text:
            state = "installed"
        else:
            state, ok = "installed, but differs from what `agent service install` writes now (run it again)", False
        print(f"{path}: {state}")
    why = units.manager_reachable(p.manager)
    if why is not None:
        print(f"{p.manager}: cannot be reached ({why})")
    elif p.manager == "systemd":
        name = units.unit_name()
        for unit in (f"{name}.socket", f"{name}.service"):
            for verb in ("is-enabled", "is-active"):
                done = units.run(["systemctl", "--user", verb, unit])
                print(f"{unit} {verb.removeprefix('is-')}: {done.stdout.strip() or done.stderr.strip()}")
    elif p.manager == "schtasks":
        print(f"task {units.unit_name()}: {'registered' if units.task_registered() else 'not registered'}")
    else:
        print(f"{units.label()}: {'loaded' if units.launchd_loaded() else 'not loaded'}")
    return 0 if ok else 1


def register(sub: Subcommands) -> None:
    actions = add_group(
        sub,
        "service",
        "run the agent at login (systemd user units on Linux, a LaunchAgent on macOS, a logon task on Windows)",
        dest="action",
        metavar="ACTION",
    )
    for name, fn, help in (
        ("install", cmd_install, "write the units with this installation's agent, enable and start them"),
        ("uninstall", cmd_uninstall, "stop and disable the units, remove them"),
        ("status", cmd_status, "whether the units are installed, current and running"),
    ):
        p = add_command(actions, name, _units_command(fn), help)
        p.add_argument("--dry-run", action="store_true", help="print what would be written and run; change nothing")
        p.add_argument(
            "--manager",
            choices=MANAGERS,
            default=None,
            help="default: systemd on Linux, launchd on macOS, schtasks on Windows",
        )
