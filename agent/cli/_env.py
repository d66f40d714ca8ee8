"""What ``agent exec`` and ``agent run`` share: fetching credentials for environment
variables in one round trip, and becoming the command.

Every credential is fetched before the command starts, so a missing credential or a
locked agent fails with the command never run; an expired one is warned about on
stderr, or refused (``--refuse-expired``, ``CREDENTIAL_AGENT_ON_EXPIRED=refuse``). A
failure names the variable and the credential, never a value.
"""

from __future__ import annotations

import os
import sys

from agent.cli._common import CliError, unlock_on_demand
from client import Client, errors
from client.messages import expired_on, get_args
from client.validation import DEFAULT_TYPE
from client.variables import EXEC_GUARD

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from typing import Any

__all__ = ["refuse_inside", "fetch", "set_command", "child_env", "exec_command"]

# (platform, credential type) of one credential
Name = tuple[str, str]


def refuse_inside(how: str) -> None:
    """``agent exec``/``agent run`` nest (the inner one adds its keys, and its variables win);
    what reads this environment as the user's own (``agent import env``) is refused inside
    one: the keys it would find are the ones the agent put there."""
    if os.environ.get(EXEC_GUARD):
        raise CliError(
            f"inside `agent exec` or `agent run` ({EXEC_GUARD} is set), the environment holds keys the agent "
            f"injected, not yours: run `agent {how}` outside it (or unset {EXEC_GUARD} if it really is yours)"
        )


def grant(wanted: Mapping[str, Name], command: str) -> None:
    """Grant the credentials ``wanted`` names to this process's tree (which the command
    becomes) instead of putting them in its environment: the command reads them through the
    client library, and any other credential it asks for needs the user's approval."""
    names = list(dict.fromkeys(wanted.values()))
    with Client() as c:
        unlock_on_demand(c)
        c.grant(names)
    print(
        f"agent: granted {len(names)} credential{'s' if len(names) != 1 else ''} to {os.path.basename(command)} "
        "and its children (read through the client library; any other asks for approval)",
        file=sys.stderr,
    )


def fetch(
    wanted: Mapping[str, Name],
    command: str,
    refs: Mapping[str, str] | None = None,
    *,
    refuse_expired: bool = False,
    stopped: str = "",
) -> dict[str, str]:
    """``{VAR: value}`` for ``{VAR: (platform, type)}``, pipelined in one round trip.

    ``refs`` names how each variable asked (``agent://runpod``) for the error message.
    """
    names = list(dict.fromkeys(wanted.values()))
    if not names:
        return {}
    stopped = stopped or f"{command} was not started"
    with Client() as c:
        unlock_on_demand(c)  # at a terminal, a locked passphrase vault asks here
        refuse = refuse_expired or c.on_expired == "refuse"
        # the command's name (never its arguments) tells the audit log what the credential was for
        program = os.path.basename(command)
        replies = c.call_many([("get", {**get_args(p, t, "warn"), "command": program}) for p, t in names])
    values: dict[Name, str] = {}
    for (platform, ctype), reply in zip(names, replies, strict=True):
        if isinstance(reply, errors.AgentError):
            raise _failure(reply, (platform, ctype), wanted, stopped, refs) from None
        values[(platform, ctype)] = _value(platform, ctype, reply, refuse, stopped)
    return {var: values[name] for var, name in wanted.items()}


def _value(platform: str, ctype: str, reply: Any, refuse: bool, stopped: str) -> str:
    """The value of a ``get`` reply; an expired one is refused or warned about, by name only."""
    if isinstance(reply, str):  # an agent that predates expiry
        return reply
    when = expired_on(reply.get("expires_at"))
    if when is not None:
        if refuse:
            raise errors.Expired(
                f"{platform}/{ctype} expired on {when}; store a new one with "
                f"`{set_command(platform, ctype)}`; {stopped}"
            )
        print(
            f"agent: warning: {platform}/{ctype} expired on {when}; store a new one with "
            f"`{set_command(platform, ctype)}`",
            file=sys.stderr,
        )
    value: str = reply["value"]
    return value


def set_command(platform: str, ctype: str) -> str:
    """The command that stores this credential, for a hint."""
    return f"agent set {platform}" + ("" if ctype == DEFAULT_TYPE else f" --type {ctype}")


def _failure(
    reply: errors.AgentError, name: Name, wanted: Mapping[str, Name], stopped: str, refs: Mapping[str, str] | None
) -> errors.AgentError:
    users = [var for var, n in wanted.items() if n == name]
    who = ", ".join(f"{v}={refs[v]}" if refs else v for v in users)
    hint = f"store it with `{set_command(*name)}`; " if isinstance(reply, errors.NotFound) else ""
    # the agent's own error class, so that main gives it its exit code (locked: 3)
    return type(reply)(f"{who}: {reply.message}; {hint}{stopped}")


def child_env(base: Mapping[str, str], values: Mapping[str, str]) -> dict[str, str]:
    return {**base, **values, EXEC_GUARD: "1"}


def exec_command(command: Sequence[str], env: Mapping[str, str]) -> int:
    """Become ``command`` (``execvpe``); returns only when that fails, with a shell's code."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(command[0], list(command), env)  # noqa: S606 - replacing ourselves with the user's command is the point
    except FileNotFoundError:
        print(f"agent: command not found: {command[0]}", file=sys.stderr)
        return 127  # as shells say it
    except ValueError:
        # os.execvpe refuses NUL bytes; never say which value
        raise CliError("a credential contains a NUL byte and cannot go into an environment variable") from None
    except OSError as e:
        print(f"agent: cannot run {command[0]}: {e.strerror or type(e).__name__}", file=sys.stderr)
        return 126
