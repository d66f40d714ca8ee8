"""Config mistakes are a typed, documented error that says where and what; durations
are taken wherever seconds are."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import client
from agent import remotes
from agent.cli import _common
from client import config, errors
from support import AgentProcess


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    config._cache.clear()
    return path


# --- the error -----------------------------------------------------------------------------
def test_a_typo_names_the_file_the_line_and_the_nearest_key(tmp_path: Path) -> None:
    path = write(tmp_path, "# mine\nautostart = true\nidle_timout = 900\n")
    with pytest.raises(client.ConfigError) as info:
        config.read(path)
    assert isinstance(info.value, client.AgentError) and isinstance(info.value, ValueError)
    assert info.value.message.startswith(f"{path}, line 3: unknown key 'idle_timout'; did you mean idle_timeout?")
    assert config.ConfigError is client.ConfigError is errors.ConfigError
    assert errors.CODES["config_error"] is client.ConfigError


@pytest.mark.parametrize(("text", "line", "words"), [
    ('log_level = "info"\n\nmax_unlocked = "soon"\n', 3, ["'max_unlocked'", "not a duration: 'soon'", "1h30m"]),
    ("[remot]\nurl = 1\n", 1, ["unknown key 'remot'", "did you mean remote?"]),
    ("[remote]\nurl = 1\n", 1, ["'remote' must hold tables ([remote.NAME])"]),
    ('"idle_timeout" = true\n', 1, ["'idle_timeout' must be a duration"]),
    ("frame_timout = 1\n", 1, ["did you mean frame_timeout?"]),
])
def test_bad_values_say_where(tmp_path: Path, text: str, line: int, words: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(client.ConfigError) as info:
        config.read(path)
    assert info.value.message.startswith(f"{path}, line {line}: ")
    for word in words:
        assert word in info.value.message


def test_an_unrelated_name_gets_no_guess(tmp_path: Path) -> None:
    with pytest.raises(client.ConfigError) as info:
        config.read(write(tmp_path, "colour = 1\n"))
    assert "did you mean" not in info.value.message and "(known: access, audit_keep," in info.value.message


def test_an_unquoted_duration_is_explained(tmp_path: Path) -> None:
    with pytest.raises(client.ConfigError, match=r'not valid TOML: .*line 1.*a duration is a string: "15m"'):
        config.read(write(tmp_path, "idle_timeout = 15m\n"))


def test_a_connector_gets_the_typed_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIAL_AGENT_CONFIG", str(write(tmp_path, "idle_timout = 900\n")))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    with pytest.raises(client.ConfigError, match="did you mean idle_timeout"):
        with client.Client() as c:
            c.get("runpod")


@pytest.mark.parametrize("command", [["status"], ["serve"]])
def test_the_cli_says_it_in_one_line(tmp_path: Path, command: list[str]) -> None:
    path = write(tmp_path, "idle_timout = 900\n")
    env = {k: v for k, v in AgentProcess(home=tmp_path).env.items() if k != "CREDENTIAL_AGENT_SOCK"}
    done = subprocess.run([sys.executable, "-m", "agent", *command],
                          env={**env, "CREDENTIAL_AGENT_CONFIG": str(path)}, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1
    assert done.stderr == (f"agent: {path}, line 1: unknown key 'idle_timout'; did you mean idle_timeout? "
                           f"(known: {', '.join(sorted(config.KEYS))})\n")


@pytest.mark.parametrize("command", [["status"], ["get", "runpod"]])
def test_a_bad_profile_is_one_line_and_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    env = {k: v for k, v in AgentProcess(home=tmp_path).env.items() if k != "CREDENTIAL_AGENT_SOCK"}
    done = subprocess.run([sys.executable, "-m", "agent", *command],
                          env={**env, "CREDENTIAL_AGENT_PROFILE": "work/../x"}, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr == (
        "agent: CREDENTIAL_AGENT_PROFILE may hold only ASCII letters, digits, '-' and '_', not 'work/../x'\n"
    )
    monkeypatch.delenv("CREDENTIAL_AGENT_SOCK", raising=False)
    monkeypatch.setenv("CREDENTIAL_AGENT_PROFILE", "a b")
    with pytest.raises(client.ConfigError, match="CREDENTIAL_AGENT_PROFILE"):
        client.Client(autostart=False)


# --- durations --------------------------------------------------------------------------------
@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("1.5", 1.5), ("0", 0.0), (" 900 ", 900.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0),
    ("1h30m", 5400.0), ("1d12h", 129600.0), ("2w", 1209600.0), ("1y", 31536000.0), ("0.5h", 1800.0),
])
def test_durations(text: str, seconds: float) -> None:
    assert config.parse_duration(text) == seconds
    assert _common.parse_duration(text) == seconds  # the CLI's wrapper: one parser


@pytest.mark.parametrize("text", ["", "soon", "-5", "15 m", "1h-30m", "h", "inf", "nan", "1e3", "15M", "1.h"])
def test_not_durations(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        config.parse_duration(text)
    with pytest.raises(_common.CliError) as info:
        _common.parse_duration(text)
    assert info.value.code == _common.Exit.USAGE


def test_a_remote_table_takes_the_same_durations() -> None:
    (team,) = remotes.parse({"team": {"url": "http://127.0.0.1:8200", "refresh": "900", "max_stale": "1y"}}, "f")
    assert (team.refresh, team.max_stale) == (900.0, 365 * 86400.0)
    for bad in ("soon", True, "-5"):
        with pytest.raises(client.ConfigError, match="'refresh' must be a number of seconds or a duration"):
            remotes.parse({"team": {"url": "http://127.0.0.1:8200", "refresh": bad}}, "f")


@pytest.mark.parametrize(("seconds", "text"), [
    (3 * 86400 + 60, "3d"), (14 * 3600 + 59, "14h"), (300, "5m"), (59.6, "60s"), (0, "0s"),
])
def test_one_formatter_shows_the_largest_whole_unit(seconds: float, text: str) -> None:
    assert config.format_duration(seconds) == text
    assert config.parse_duration(text) <= seconds + 1  # read back by the one parser


def test_durations_in_the_file_and_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CREDENTIAL_AGENT_CONFIG", str(write(tmp_path, 'idle_timeout = "15m"\nmax_unlocked = 60\n')))
    assert config.setting("idle_timeout") == 900.0
    assert config.setting("max_unlocked") == 60.0
    monkeypatch.setenv("CREDENTIAL_AGENT_IDLE_TIMEOUT", "1h30m")
    assert config.setting("idle_timeout") == 5400.0
    monkeypatch.setenv("CREDENTIAL_AGENT_FRAME_TIMEOUT", "10 minutes")
    with pytest.raises(client.ConfigError, match="CREDENTIAL_AGENT_FRAME_TIMEOUT: 'frame_timeout': not a duration"):
        config.setting("frame_timeout")


def test_serve_takes_durations() -> None:
    a = AgentProcess().start("--idle-timeout", "15m", "--max-unlocked", "1h30m")
    try:
        with a.client() as c:
            status = c.status()
        assert (status["idle_timeout"], status["max_unlocked"]) == (900.0, 5400.0)
    finally:
        a.cleanup()
    done = subprocess.run([sys.executable, "-m", "agent", "serve", "--idle-timeout", "soon"],
                          env=a.env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "not a duration: 'soon'" in done.stderr and "Traceback" not in done.stderr


def test_expires_wants_a_unit() -> None:
    with pytest.raises(_common.CliError, match="90d for days"):
        _common.expires_at("90")
    assert _common.expires_at("1h30m", now=0.0) == 5400.0


def test_a_missing_ca_file_is_named_at_start(tmp_path: Path) -> None:
    missing = tmp_path / "team-ca.pem"
    with pytest.raises(client.ConfigError, match=r"\[remote.team\]: 'ca_file' .*team-ca.pem is not a file"):
        remotes.parse({"team": {"url": "https://bao:8200", "ca_file": str(missing)}}, "f")
    missing.write_text("-----BEGIN CERTIFICATE-----\n")
    (team,) = remotes.parse({"team": {"url": "https://bao:8200", "ca_file": str(missing)}}, "f")
    assert team.ca_file == missing
