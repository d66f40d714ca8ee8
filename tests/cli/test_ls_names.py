"""Every name `agent ls` prints is taken back by `agent show`, `get` and `rm`."""

from __future__ import annotations

import subprocess
import sys

from support import AgentProcess

BACKEND = "client.keyring_backend.AgentKeyring"
KEYRING = {  # (service, username) -> password, set through the real keyring CLI and backend
    ("https://upload.pypi.org/legacy/", "__token__"): "pypi-token",
    ("Service", "Bob"): "case-kept",
    ("https://example.org/" + "long/" * 20, "alice@example.org"): "hashed-name",  # over 64 characters
}
PLAIN = {("huggingface", "api-key"): "hf_" + "a" * 30, ("runpod", "ssh"): "ssh-key", ("mytool", "api-key"): "v1"}


def test_every_ls_line_is_accepted_back(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    for (service, user), password in KEYRING.items():
        done = subprocess.run([sys.executable, "-m", "keyring", "set", service, user], input=password,
                              env={**a.env, "PYTHON_KEYRING_BACKEND": BACKEND}, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
    with a.client() as c:
        for (p, t), v in PLAIN.items():
            c.store(p, v, t, validate=False)
    values = {*KEYRING.values(), *PLAIN.values()}

    ls = a.cli("ls")
    assert ls.returncode == 0, ls.stderr
    lines = ls.stdout.splitlines()[1:]
    assert len(lines) == len(values)
    assert any(line.startswith("keyring:Service ") for line in lines), lines  # shown as the service
    seen = set()
    for line in lines:
        platform, ctype = line.split()[:2]
        show = a.cli("show", platform, "--type", ctype)
        assert show.returncode == 0, (line, show.stderr)
        got = a.cli("get", platform, "--type", ctype)
        assert got.returncode == 0, (line, got.stderr)
        seen.add(got.stdout.rstrip("\n"))
        rm = a.cli("rm", platform, "--type", ctype)
        assert rm.returncode == 0, (line, rm.stderr)
        assert a.cli("get", platform, "--type", ctype).returncode == 1
    assert seen == values
    assert a.cli("ls").stdout == "no credentials stored\n"
