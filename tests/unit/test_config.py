"""The config file: documented keys, clear errors, precedence, and a light client side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from client import config, errors, paths
from support import ROOT, AgentProcess, base_env

CONFIG_DOC = (ROOT / "docs" / "service-and-config.md").read_text()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_every_documented_key_reads_back(tmp_path: Path) -> None:
    path = write(tmp_path, """
socket = "~/agent.sock"
log_level = "debug"
idle_timeout = 900
max_unlocked = 28800.5
keystore_timeout = 5
key_source = "passphrase"
autostart = false
max_connections = 64
connection_idle_timeout = 30
frame_timeout = 5
audit_keep = 500
history_keep = 3
history_max_age = "30d"
confirm_timeout = 30
pinentry = "/usr/bin/pinentry-tty"
log_max_bytes = 4096

[remote.team]
url = "http://127.0.0.1:8200"

[access.openai]
rule = "confirm"
""")
    data = config.read(path)
    assert data == {
        "socket": Path.home() / "agent.sock",
        "log_level": "debug",
        "idle_timeout": 900.0,
        "max_unlocked": 28800.5,
        "keystore_timeout": 5.0,
        "key_source": "passphrase",
        "autostart": False,
        "max_connections": 64,
        "connection_idle_timeout": 30.0,
        "frame_timeout": 5.0,
        "audit_keep": 500,
        "history_keep": 3,
        "history_max_age": 30 * 86400.0,
        "confirm_timeout": 30.0,
        "pinentry": Path("/usr/bin/pinentry-tty"),
        "log_max_bytes": 4096,
        "access": {"openai": {"rule": "confirm"}},
        "remote": {"team": {"url": "http://127.0.0.1:8200"}},
    }
    assert set(data) == set(config.KEYS)


def test_every_key_is_in_the_config_docs() -> None:
    section = CONFIG_DOC.split("## Run at login", 1)[1]
    for key, spec in config.KEYS.items():
        assert f"`{key}`" in section, key
        if spec.env:
            assert spec.env in CONFIG_DOC, spec.env


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("idle_timout = 5\n", ["'idle_timout'", "unknown key", "known:"]),
        ('idle_timeout = "five"\n', ["'idle_timeout'", "not a duration", "15m"]),
        ("idle_timeout = true\n", ["'idle_timeout'", "must be a duration", "bool"]),
        ("max_unlocked = -1\n", ["'max_unlocked'", "0 (off)"]),
        ("max_unlocked = nan\n", ["'max_unlocked'"]),
        ('autostart = "no"\n', ["'autostart'", "true or false"]),
        ('log_level = "loud"\n', ["'log_level'", "debug, info, warning, error"]),
        ('key_source = "vault"\n', ["'key_source'", "keyring, passphrase"]),
        ('socket = "relative/agent.sock"\n', ["'socket'", "absolute path"]),
        ("socket = 3\n", ["'socket'", "string"]),
        ("[section]\nidle_timeout = 1\n", ["'section'", "unknown key"]),
        ("idle_timeout = \n", ["not valid TOML"]),
        ('remote = "team"\n', ["'remote'", "[remote.NAME]"]),
    ],
)
def test_bad_files_name_the_key_and_the_file(tmp_path: Path, text: str, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(config.ConfigError) as info:
        config.read(path)
    assert str(path) in info.value.message
    for word in words:
        assert word in info.value.message


def test_missing_file_is_empty(tmp_path: Path) -> None:
    assert config.read(tmp_path / "none.toml") == {}


def test_precedence_flag_env_file_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIAL_AGENT_CONFIG", str(write(tmp_path, "idle_timeout = 30\n")))
    assert config.setting("max_unlocked") == 0.0  # default
    assert config.setting("idle_timeout") == 30.0  # file
    monkeypatch.setenv("CREDENTIAL_AGENT_IDLE_TIMEOUT", "20")
    assert config.setting("idle_timeout") == 20.0  # env
    assert config.setting("idle_timeout", 10) == 10.0  # flag
    monkeypatch.setenv("CREDENTIAL_AGENT_IDLE_TIMEOUT", "soon")
    with pytest.raises(config.ConfigError, match="CREDENTIAL_AGENT_IDLE_TIMEOUT"):
        config.setting("idle_timeout")
    with pytest.raises(config.ConfigError, match="--max-unlocked"):
        config.setting("max_unlocked", -3)


def test_socket_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    monkeypatch.setenv("CREDENTIAL_AGENT_CONFIG", str(tmp_path / "none.toml"))
    assert paths.socket_path() == tmp_path / "credential-agent" / "agent.sock"
    monkeypatch.setenv("CREDENTIAL_AGENT_CONFIG", str(write(tmp_path, f'socket = "{tmp_path}/f.sock"\n')))
    assert paths.socket_path() == tmp_path / "f.sock"
    monkeypatch.setenv("CREDENTIAL_AGENT_SOCK", str(tmp_path / "e.sock"))
    assert paths.socket_path() == tmp_path / "e.sock"


def test_config_dir_matches_platformdirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import platformdirs

    for value in (str(tmp_path), "", "  "):
        monkeypatch.setenv("XDG_CONFIG_HOME", value)
        assert paths.config_dir() == Path(platformdirs.user_config_dir("credential-agent", appauthor=False))


def test_client_reads_socket_and_autostart_without_agent_code(tmp_path: Path) -> None:
    home = tmp_path
    env = base_env(home)
    env.pop("CREDENTIAL_AGENT_SOCK")
    env.pop("CREDENTIAL_AGENT_NO_AUTOSTART")
    config = home / "config" / "credential-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(f'socket = "{home}/elsewhere.sock"\nautostart = false\n')
    probe = (
        "import sys, json\n"
        "from client import Client, errors\n"
        "c = Client()\n"
        "try:\n"
        "    c.hello()\n"
        "except errors.AgentUnavailable as e:\n"
        "    msg = e.message\n"
        "print(json.dumps({'path': str(c.path), 'msg': msg, 'mods': sorted(sys.modules)}))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["path"] == f"{home}/elsewhere.sock"
    assert "autostart is off" in out["msg"]
    for forbidden in ("agent", "keyring", "cryptography", "platformdirs"):
        assert not any(m == forbidden or m.startswith(forbidden + ".") for m in out["mods"]), forbidden


def test_agent_refuses_a_bad_config_file_naming_key_and_file() -> None:
    a = AgentProcess()
    config = a.home / "config" / "credential-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text("idle_timeout = 5\nlock_after = 3\n")
    try:
        done = a.cli("serve", timeout=60)
        assert done.returncode == 1
        assert str(config) in done.stderr and "'lock_after'" in done.stderr
        assert "Traceback" not in done.stderr
        # the client side reads the same file (for `socket`) and says the same
        env = {k: v for k, v in a.env.items() if k != "CREDENTIAL_AGENT_SOCK"}
        status = subprocess.run(a.command("status"), env=env, capture_output=True, text=True, timeout=60)
        assert status.returncode == 1 and "'lock_after'" in status.stderr
    finally:
        a.cleanup()


def test_log_level_and_key_source_from_the_file() -> None:
    a = AgentProcess()
    config = a.home / "config" / "credential-agent" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('log_level = "warning"\nkey_source = "passphrase"\n')
    try:
        a.proc = subprocess.Popen(a.command("serve"), env=a.env, stdout=subprocess.DEVNULL,
                                  stderr=open(a.log_path, "ab"))
        a.wait_ready()
        # key_source from the file: init asks for a passphrase instead of trying the keystore
        done = a.cli("init", input="pass phrase one\n")
        assert done.returncode == 0, done.stderr
        assert "passphrase" in done.stdout
        assert " INFO " not in a.log()  # warning level: the info lines are gone
    finally:
        a.cleanup()


def test_config_error_is_an_agent_error() -> None:
    assert issubclass(config.ConfigError, errors.AgentError)
