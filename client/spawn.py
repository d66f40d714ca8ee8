"""Starting an agent process so that nothing of the caller's directory or environment runs in it.

``agent start`` and client autostart both start agent code in a new process. A
plain ``python -m agent`` would import an ``agent/`` package from the caller's
working directory (any ML project has one) or from ``PYTHONPATH``, and run it with
the user's passphrase and keys. So:

- the interpreter runs isolated (``-I``: no current directory, no ``PYTHON*``
  variables, no user site) and is pointed at the one directory this package came
  from, the code the caller already trusts;
- it starts in ``/``;
- its environment is built from a short list of what the agent uses (home, paths,
  locale, the session bus and display for the keystore, the agent's own settings),
  so a key exported in the caller's shell (or set by ``agent exec``) never lives on
  in a long-running agent.

Stdlib only: the client imports this module when it starts an agent, never before.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "agent_command",
    "detach_command",
    "lets_go",
    "isolated_command",
    "clean_env",
    "code_root",
    "KEEP",
    "KEEP_PREFIXES",
    "AWS_PREFIX",
]

# What the agent (and keyring, platformdirs, the Secret Service client) read.
KEEP = frozenset(
    {
        "HOME",
        "USER",
        "LOGNAME",
        "PATH",
        "SHELL",
        "LANG",
        "LANGUAGE",
        "TZ",
        "TMPDIR",
        "TEMP",
        "TMP",
        "DBUS_SESSION_BUS_ADDRESS",
        "DISPLAY",
        "WAYLAND_DISPLAY",
        "GNOME_KEYRING_CONTROL",
        "PYTHON_KEYRING_BACKEND",
        "SYSTEMROOT",
        "APPDATA",
        "LOCALAPPDATA",
        "USERPROFILE",
    }
)
KEEP_PREFIXES = ("XDG_", "LC_", "CREDENTIAL_AGENT_", "KEYRING_PROPERTY_")
_PATHS = ("CREDENTIAL_AGENT_SOCK", "CREDENTIAL_AGENT_CONFIG")
# boto3's credential chain reads these (a profile, keys, a container's or web identity's
# variables): handed to a new agent, which keeps them only if its config names an AWS
# Secrets Manager remote (agent.daemon), and drops them otherwise
AWS_PREFIX = "AWS_"

# -I ignores PYTHONPATH and the current directory; the one path given is inserted first
_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from agent.cli import main; sys.exit(main())"
# `agent serve --detach` through its own entry, which loads no CLI (agent.detach). A client
# starts it with os.posix_spawn (client._autostart): so it lets go of what subprocess would
# have, the caller's working directory and any descriptor the caller left inheritable
# (agent.detach.spawned).
_DETACH_BOOT = "import sys; sys.path.insert(0, sys.argv.pop(1)); from agent.detach import spawned; sys.exit(spawned())"


def clean_env(environ: Mapping[str, str] | None = None, aws: bool = False) -> dict[str, str]:
    """The variables of ``environ`` (default: this process's) that an agent may see (with
    ``aws``, boto3's ``AWS_*`` too: for starting an agent that may have an AWS remote)."""
    source = os.environ if environ is None else environ
    prefixes = (*KEEP_PREFIXES, AWS_PREFIX) if aws else KEEP_PREFIXES
    env = {k: v for k, v in source.items() if k in KEEP or k.startswith(prefixes)}
    for name in _PATHS:  # the agent runs in /: a relative path must mean what it meant here
        if env.get(name):
            env[name] = os.path.abspath(os.path.expanduser(env[name]))
    return env


def code_root() -> str | None:
    """The directory holding this installation's ``agent`` and ``client`` packages."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return root if os.path.isfile(os.path.join(root, "agent", "cli", "__init__.py")) else None


def isolated_command(executable: str, root: str, *args: str) -> list[str]:
    """``agent ARGS`` on the interpreter ``executable``, isolated, on the code in ``root``."""
    return [executable, "-I", "-c", _BOOT, root, *args]


def detach_command(unlock: bool = False) -> list[str]:
    """How to run ``agent serve --detach`` in a new process, as ``agent_command`` says, with
    this installation's code entered at ``agent.detach`` (no CLI, argparse or parser module:
    ~5 ms of a client's first use) where ``agent_command`` would run this interpreter on it.
    ``unlock``: the request it is started for makes a keystore vault unlock itself, so the
    new agent reads its key while it loads (``--unlock``, which agent.detach alone reads)."""
    root = code_root()
    if root is None or os.environ.get("CREDENTIAL_AGENT_COMMAND"):
        return agent_command("serve", "--detach")
    # "serve --detach" for whoever reads the command line (ps)
    return [sys.executable, "-I", "-c", _DETACH_BOOT, root, "serve", "--detach", *(["--unlock"] if unlock else [])]


def lets_go(argv: list[str]) -> bool:
    """Whether ``argv`` (from ``detach_command``) lets go of its caller's working directory
    and inheritable descriptors itself, as ``_DETACH_BOOT`` does (agent.detach.spawned)."""
    return len(argv) > 3 and argv[3] == _DETACH_BOOT


def agent_command(*args: str) -> list[str]:
    """How to run ``agent ARGS`` in a new process: ``CREDENTIAL_AGENT_COMMAND`` if set,
    else this interpreter, isolated, on this installation's code, else the installed
    ``agent`` script by its absolute path."""
    override = os.environ.get("CREDENTIAL_AGENT_COMMAND")
    if override:
        import shlex

        return [*shlex.split(override), *args]
    root = code_root()
    if root is not None:
        return isolated_command(sys.executable, root, *args)
    import shutil

    found = shutil.which("agent")
    if found is None or not os.path.isabs(found):
        raise FileNotFoundError("the `agent` command is not installed")
    return [found, *args]
