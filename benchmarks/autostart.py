#!/usr/bin/env python3
"""The autostart cold path, for benchmarks/run.py: a process's first ``Client().get`` with no
agent running, until the value is returned, side by side with baselines measured in the
same rounds.

Which vault: a passphrase vault cannot answer a ``get`` until someone unlocks it, so the
cold ``get`` is measured on a keystore vault (its master key in a real Secret Service,
gnome-keyring on a private bus, already running): the agent is started, unlocks itself on
that first request (one keystore read) and answers. The same is measured for a locked
passphrase vault's first ``status`` (what it can answer cold). Baselines, in the same rounds:
``secret-tool lookup`` (libsecret's C tool, on the same Secret Service) and the same
``Client().get`` process with the agent already running. Between two cold runs the agent is
stopped (``agent stop``, not timed).

    measure(python, agent_cmd, env, secret_service_env, rounds, preexec) -> {name: [seconds, ...]}

``preexec`` runs in every process started (run.py's ``unpin``: a plain install's rows run on
every CPU, as a user's would; the checkout's stay on the one CPU run.py pins itself to, where
a new agent has no second CPU to read its key on: agent.keys.early).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

GET = "import client; assert client.Client().get('bench0') == {value!r}"
STATUS = "import client; assert client.Client().status()['locked']"


Preexec = Callable[[], None] | None


def _run(argv: list[str], env: dict[str, str], stdin: str = "", preexec: Preexec = None) -> None:
    # cwd "/": `python -c` puts the working directory first on sys.path
    subprocess.run(argv, env=env, input=stdin.encode(), check=True, capture_output=True, timeout=120, cwd="/",
                   preexec_fn=preexec)


def _timed(argv: list[str], env: dict[str, str], preexec: Preexec = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, cwd="/",
                   preexec_fn=preexec)
    return time.perf_counter() - t0


def _home(env_for: object, name: str) -> tuple[Path, dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix=f"ca{name}-", dir="/tmp"))
    env = dict(env_for(home))  # type: ignore[operator]
    env.pop("CREDENTIAL_AGENT_NO_AUTOSTART", None)  # what is measured is the autostart
    return home, env


def measure(python: list[str], agent_cmd: list[str], env_for: object, ss_env: dict[str, str], value: str,
            passphrase: str, rounds: int, preexec: Preexec = None) -> dict[str, list[float]]:
    """``env_for(home)``: the environment of an agent living in ``home``."""
    kr_home, kr_env = _home(env_for, "k")
    pp_home, pp_env = _home(env_for, "p")
    kr_env.update(ss_env)
    try:
        _run([*agent_cmd, "init", "--key-source", "keyring"], kr_env, preexec=preexec)
        _run([*agent_cmd, "set", "bench0", "--no-validate"], kr_env, value + "\n", preexec)
        _run([*agent_cmd, "init", "--key-source", "passphrase"], pp_env, passphrase + "\n", preexec)
        get = [*python, "-c", GET.format(value=value)]
        status = [*python, "-c", STATUS]
        cmds = {
            "cold_get": (get, kr_env, True),
            "warm_get": (get, kr_env, False),
            "cold_status": (status, pp_env, True),
            "secret_tool": (["secret-tool", "lookup", "service", "credential-agent-bench", "user", "u"], kr_env, False),
        }
        for env in (kr_env, pp_env):  # a first run of each, unmeasured: bytecode written, caches warm
            _run([*agent_cmd, "stop"], env, preexec=preexec)
        _timed(get, kr_env, preexec)
        _timed(status, pp_env, preexec)
        times: dict[str, list[float]] = {k: [] for k in cmds}
        order = list(cmds)
        for i in range(rounds):
            for k in order if i % 2 == 0 else order[::-1]:
                argv, env, cold = cmds[k]
                if cold:
                    _run([*agent_cmd, "stop"], env, preexec=preexec)
                elif k == "warm_get":
                    _timed(get, kr_env, preexec)  # started, unlocked: what is timed next is the client alone
                times[k].append(_timed(argv, env, preexec))
        return times
    finally:
        for env in (kr_env, pp_env):
            subprocess.run([*agent_cmd, "stop"], env=env, capture_output=True, timeout=60, check=False, cwd="/")
        shutil.rmtree(kr_home, ignore_errors=True)
        shutil.rmtree(pp_home, ignore_errors=True)
