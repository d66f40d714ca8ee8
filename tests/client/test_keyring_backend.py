"""The keyring backend, driven by the real `keyring` CLI against a real agent."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from client import keyring_names
from client.names import canonical_platform
from client.validation import check_name
from support import PASSPHRASE, ROOT, AgentProcess, SecretService

BACKEND = "client.keyring_backend.AgentKeyring"
PYPI = "https://upload.pypi.org/legacy/"


def keyring_cli(a: AgentProcess, *args: str, input: str = "", env: dict[str, str] | None = None,
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "keyring", *args],
        env={**a.env, "PYTHON_KEYRING_BACKEND": BACKEND, **(env or {})},
        input=input, capture_output=True, text=True, timeout=60,
    )


# --- the name mapping (pure) ------------------------------------------------------------
@given(st.text(max_size=120), st.text(max_size=120))
def test_names_are_legal_and_read_back(service: str, username: str) -> None:
    platform, ctype = keyring_names.entry_for(service, username)
    check_name(platform)
    check_name(ctype, "credential type")
    assert platform.startswith(keyring_names.PLATFORM_PREFIX) and ctype.startswith(keyring_names.TYPE_PREFIX)
    # readable names decode exactly; only long ones are hashed (and read from metadata)
    assert keyring_names.decode_platform(platform) in (service, None)
    assert keyring_names.decode_type(ctype) in (username, None)
    if not platform.startswith("keyring--"):  # not hashed: the name itself reads back exactly
        assert keyring_names.decode_platform(platform) == service
    if service.isascii() and service.isalnum() and service == service.lower() and len(service) <= 56:
        assert platform == "keyring-" + service  # plain names stay plain
    # platform names are case-insensitive: the mapped one is already canonical, so no
    # two services ever meet under one name
    assert canonical_platform(platform) == platform


@given(st.text(max_size=60))
def test_services_differing_in_case_stay_apart(service: str) -> None:
    for other in (service.upper(), service.lower(), service.swapcase()):
        if other != service:
            assert canonical_platform(keyring_names.platform_for(other)) != \
                canonical_platform(keyring_names.platform_for(service))


def test_a_name_from_before_case_was_escaped_has_its_new_name() -> None:
    assert keyring_names.platform_for("Service") == "keyring-_53ervice"
    assert keyring_names.legacy_platform("keyring-Service") == "keyring-_53ervice"
    assert keyring_names.decode_platform("keyring-Service") == "Service"
    for current in ("keyring-service", "keyring-_53ervice", keyring_names.platform_for("x" * 100), "runpod"):
        assert keyring_names.legacy_platform(current) is None


@given(st.text(max_size=80), st.text(max_size=80))
def test_distinct_services_get_distinct_platforms(a: str, b: str) -> None:
    if a != b:
        assert keyring_names.platform_for(a) != keyring_names.platform_for(b)


def test_escaped_and_hashed_names_cannot_collide() -> None:
    long = "x" * 100
    hashed = keyring_names.platform_for(long)
    assert hashed.startswith("keyring--")
    assert keyring_names.decode_platform(hashed) is None
    # escaped names never contain '-' after the prefix: even a service made to look hashed differs
    lookalike = hashed[len("keyring-"):]
    assert keyring_names.platform_for(lookalike) != hashed
    assert keyring_names.entry_for(PYPI, "__token__") == (
        "keyring-https_3a_2f_2fupload_2epypi_2eorg_2flegacy_2f", "user-_5f_5ftoken_5f_5f")


# --- the real keyring CLI through a real agent -------------------------------------------
def test_keyring_cli_set_get_del(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    secret = "pypi-AgEIcHlwaS5vcmc secret with spaces"
    done = keyring_cli(a, "set", PYPI, "__token__", input=secret + "\n")
    assert done.returncode == 0, done.stderr
    done = keyring_cli(a, "get", PYPI, "__token__")
    assert done.returncode == 0, done.stderr
    assert done.stdout == secret + "\n"
    # it really is in the agent, under the mapped name, with the originals in metadata
    platform, ctype = keyring_names.entry_for(PYPI, "__token__")
    with a.client() as c:
        assert c.get(platform, ctype) == secret
        meta = c.metadata(platform, ctype)["metadata"]
    assert meta == {"keyring_service": PYPI, "keyring_username": "__token__"}
    # `agent ls` shows it readably
    ls = a.cli("ls")
    assert f"keyring:{PYPI}" in ls.stdout and "user:__token__" in ls.stdout, ls.stdout
    # --get-mode creds without a username finds the username (twine's way)
    done = keyring_cli(a, "get", PYPI, "--mode", "creds", "--output", "json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"username": "__token__", "password": secret}
    done = keyring_cli(a, "del", PYPI, "__token__")
    assert done.returncode == 0, done.stderr
    assert keyring_cli(a, "get", PYPI, "__token__").returncode == 1  # not found
    done = keyring_cli(a, "del", PYPI, "__token__")
    assert done.returncode != 0 and "PasswordDeleteError" in done.stderr
    assert secret not in a.log()


def test_keyring_long_and_unicode_names_lose_nothing(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    service = "https://example.org/" + "very-long-path/" * 8 + "ünïcode ✓"
    for user, value in (("alice@example.org", "v1"), ("", "v-empty-user"), ("ü ser", "v2")):
        done = keyring_cli(a, "set", service, user, input=value)
        assert done.returncode == 0, done.stderr
    for user, value in (("alice@example.org", "v1"), ("", "v-empty-user"), ("ü ser", "v2")):
        done = keyring_cli(a, "get", service, user)
        assert done.returncode == 0 and done.stdout == value + "\n", (user, done.stderr)
    ls = a.cli("ls")
    assert f"keyring:{service}" in ls.stdout, ls.stdout  # hashed name, shown from metadata


def test_keyring_locked_agent_raises_keyring_locked(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    assert keyring_cli(a, "set", PYPI, "u", input="pw").returncode == 0
    with a.client() as c:
        c.lock()
    code = (
        "import keyring, keyring.errors\n"
        f"try:\n    keyring.get_password({PYPI!r}, 'u')\n"
        "except keyring.errors.KeyringLocked as e:\n    print('locked:', e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**a.env, "PYTHON_KEYRING_BACKEND": BACKEND},
                          capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("locked:"), (done.stdout, done.stderr)
    with a.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
    assert keyring_cli(a, "get", PYPI, "u").stdout == "pw\n"


def test_keyringrc_cfg_selects_the_backend(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    cfg = Path(a.env["XDG_CONFIG_HOME"]) / "python_keyring" / "keyringrc.cfg"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f"[backend]\ndefault-keyring={BACKEND}\n")
    env = {k: v for k, v in a.env.items() if k != "PYTHON_KEYRING_BACKEND"}
    done = subprocess.run([sys.executable, "-m", "keyring", "set", "svc", "bob"], env=env, input="hunter2",
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    with a.client() as c:
        assert c.get(*keyring_names.entry_for("svc", "bob")) == "hunter2"


# --- registration and priority ------------------------------------------------------------
def _fake_install(tmp: Path) -> Path:
    """Install the entry points of pyproject.toml as an installed distribution would."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    eps = project["entry-points"]["keyring.backends"]
    dist = tmp / "credential_agent-0.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: credential-agent\nVersion: 0.0.0\n")
    (dist / "entry_points.txt").write_text(
        "[keyring.backends]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    return tmp


def test_entry_point_registers_backend_with_low_priority(agent: AgentProcess, tmp_path: Path) -> None:
    site = _fake_install(tmp_path)
    env = {k: v for k, v in agent.env.items() if k != "PYTHON_KEYRING_BACKEND"}
    env["PYTHONPATH"] = f"{ROOT}:{site}"
    env["XDG_CONFIG_HOME"] = str(tmp_path / "noconfig")
    code = (
        "import keyring, keyring.backend\n"
        "names = {type(k).__module__ + '.' + type(k).__name__: k.priority for k in keyring.backend.get_all_keyring()}\n"
        "print(names.get('client.keyring_backend.AgentKeyring'))\n"
        "print(type(keyring.get_keyring()).__module__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    priority, chosen = done.stdout.split()
    assert float(priority) == -1.0  # registered through the entry point...
    assert not chosen.startswith("client.")  # ...and never chosen on its own
    # a user who wants it chosen automatically raises its priority
    env["CREDENTIAL_AGENT_KEYRING_PRIORITY"] = "50"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["50.0", "client.keyring_backend"], done.stderr


def test_import_client_does_not_load_the_backend() -> None:
    code = "import client, client.keyring_names, sys; print('keyring' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize("service", ["", PYPI])
def test_backend_repr_and_errors_carry_no_secret(unlocked_agent: AgentProcess, service: str) -> None:
    a = unlocked_agent
    canary = "CANARY-5a1b2c3d-keyring"
    assert keyring_cli(a, "set", service, "u", input=canary).returncode == 0
    done = keyring_cli(a, "set", service, "u", input="x" * (70 * 1024))  # over the value limit
    assert done.returncode != 0 and canary not in done.stderr and "x" * 100 not in done.stderr
    assert canary not in a.log()


def test_agent_inheriting_its_own_backend_still_uses_the_real_keystore(secret_service: SecretService) -> None:
    """PYTHON_KEYRING_BACKEND set for twine reaches the agent too: it must not ask itself."""
    env = {**secret_service.env, "PYTHON_KEYRING_BACKEND": "client.keyring_backend.AgentKeyring"}
    a = AgentProcess(env=env).start()
    try:
        done = a.cli("init", "--key-source", "keyring", timeout=60)
        assert done.returncode == 0, done.stderr
        assert "SecretService" in done.stdout
        with a.client(timeout=30) as c:
            c.store("runpod", "r" * 25)
        a.stop()
        a.start()
        with a.client(timeout=30) as c:
            assert c.status()["locked"]
            assert c.get("runpod") == "r" * 25  # unlocked itself from the Secret Service
            assert c.status()["locked"] is False
    finally:
        a.cleanup()
