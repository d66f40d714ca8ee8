"""``agent rekey`` (the master key under the other key source) and the recovery code
(``agent init --recovery-code``, ``agent recovery-code``, ``agent recover``), through
the real ``agent`` command, on passphrase vaults and on a real Secret Service."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import errors
from support import PASSPHRASE, AgentProcess, SecretService, vault_store

NEW = "a new passphrase, longer"
RP = "rp_" + "r" * 30
CODE_RE = re.compile(r"recovery code: ((?:[A-Z2-7]{4}-){7}[A-Z2-7]{4})\n")


def _code(stdout: str) -> str:
    found = CODE_RE.search(stdout)
    assert found, stdout
    return found.group(1)


def _account(a: AgentProcess) -> str:
    with vault_store(a.home) as store:
        meta = store.meta()
    return (meta.get("key_account") or b"master-key-" + meta["vault_id"]).decode()


def _meta_keys(a: AgentProcess) -> set[str]:
    with vault_store(a.home) as store:
        return set(store.meta())


def _keystore(ss: SecretService, op: str, account: str) -> str | None:
    code = {"get": f"v = keyring.get_password('credential-agent', {account!r}); print(v or '')",
            "delete": f"keyring.delete_password('credential-agent', {account!r})"}[op]
    done = subprocess.run([sys.executable, "-c", "import keyring; " + code], env={**os.environ, **ss.env},
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip() or None


def _restart(a: AgentProcess) -> None:
    a.stop()
    a.start()


@pytest.fixture
def ss_agent(secret_service: SecretService) -> Iterator[AgentProcess]:
    """An agent that reaches the real Secret Service, no vault yet; a short keystore deadline."""
    a = AgentProcess(env={**secret_service.env, "CREDENTIAL_AGENT_KEYSTORE_TIMEOUT": "3"}).start()
    yield a
    a.cleanup()


# --- passphrase vaults -------------------------------------------------------------------
def test_a_forgotten_passphrase_is_replaced_with_the_recovery_code(agent: AgentProcess) -> None:
    a = agent
    init = a.cli("init", "--key-source", "passphrase", "--recovery-code", input=PASSPHRASE + "\n")
    assert init.returncode == 0, init.stderr
    code = _code(init.stdout)
    assert "shown only now" in init.stderr
    assert a.cli("set", "runpod", "--meta", "team=ml", input=RP + "\n").returncode == 0
    _restart(a)
    # typed as people do: lower case, spaces for dashes
    done = a.cli("recover", input=code.lower().replace("-", " ") + "\n" + NEW + "\n")
    assert done.returncode == 0, done.stderr
    assert "master key now in: passphrase" in done.stdout and "unlocked" in done.stdout
    assert a.cli("get", "runpod").stdout == RP + "\n"
    assert a.cli("lock").returncode == 0
    assert a.cli("unlock", input=PASSPHRASE + "\n").returncode == 1  # the old one opens nothing
    assert a.cli("unlock", input=NEW + "\n").returncode == 0
    with a.client() as c:
        assert c.metadata("runpod")["metadata"] == {"team": "ml"}
    # the code still works (the master key is the same)
    assert a.cli("recover", input=code + "\n" + PASSPHRASE + "\n").returncode == 0


def test_a_wrong_code_is_refused_and_the_agent_keeps_serving(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    none = a.cli("recover", input="AAAA-BBBB\n" + NEW + "\n")
    assert none.returncode == 1 and "has no recovery code" in none.stderr
    made = a.cli("recovery-code", input=PASSPHRASE + "\n")
    assert made.returncode == 0, made.stderr
    _code(made.stdout)
    wrong = a.cli("recover", input="AAAA-" * 7 + "AAAA\n" + NEW + "\n")
    assert wrong.returncode == 1 and "not this vault's recovery code" in wrong.stderr
    assert a.cli("recovery-code", input="not the passphrase\n").returncode == 1
    with a.client() as c:
        assert not c.status()["locked"]
    assert a.cli("lock").returncode == 0 and a.cli("unlock", input=PASSPHRASE + "\n").returncode == 0


def test_recover_says_what_is_wrong_before_it_asks_for_a_new_passphrase(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    code = _code(a.cli("recovery-code", input=PASSPHRASE + "\n").stdout)
    garbage = a.cli("recover", input="not-a-code\n")  # no new passphrase on stdin: the code is refused first
    assert garbage.returncode == 1 and "that is not a recovery code" in garbage.stderr
    alone = a.cli("recover", input=code + "\n")
    assert alone.returncode == 1 and "needs the new passphrase on the line after the code" in alone.stderr
    same = a.cli("rekey", "--key-source", "passphrase", input=PASSPHRASE + "\n")
    assert same.returncode == 1 and "agent rotate-key --new-passphrase" in same.stderr


def test_wrong_codes_are_counted_and_each_costs_more(unlocked_agent: AgentProcess) -> None:
    """As wrong passphrases: the agent counts wrong codes and delays the next attempt; the right code resets it."""
    a = unlocked_agent
    code = _code(a.cli("recovery-code", input=PASSPHRASE + "\n").stdout)
    with a.client(timeout=60) as c:
        for n in range(1, 4):
            with pytest.raises(errors.BadPassphrase):
                c.recover("AAAA-" * 7 + "AAAA", "passphrase", NEW)
            status = c.status()
            assert status["recover_failures"] == n and status["recover_delay_s"] == pytest.approx(0.1 * n)
        c.recover(code, "passphrase", NEW)
        assert c.status()["recover_failures"] == 0


def test_rotating_the_key_drops_the_recovery_code(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    code = _code(a.cli("recovery-code", input=PASSPHRASE + "\n").stdout)
    rotated = a.cli("rotate-key", input=PASSPHRASE + "\n")
    assert rotated.returncode == 0 and "agent recovery-code" in rotated.stderr
    assert not {"recovery_kdf", "recovery_wrapped_key"} & _meta_keys(a)
    gone = a.cli("recover", input=code + "\n" + NEW + "\n")
    assert gone.returncode == 1 and "no recovery code" in gone.stderr


def test_rekey_to_the_same_source_says_what_to_use(unlocked_agent: AgentProcess) -> None:
    done = unlocked_agent.cli("rekey", "--key-source", "passphrase", input=PASSPHRASE + "\n")
    assert done.returncode == 1 and "passphrase already" in done.stderr


# --- with the real Secret Service ----------------------------------------------------------
PIN = "a-pin-of-mine"


def test_a_keystore_vault_moves_its_key_only_with_its_approval_pin(
    ss_agent: AgentProcess, secret_service: SecretService
) -> None:
    """Any process of the user can reach the socket: without the PIN it can neither move the
    master key to a passphrase of its choosing (deleting the keystore entry) nor take a code."""
    a = ss_agent
    init = a.cli("init", "--key-source", "keyring", "--recovery-code")  # the first code comes with the vault
    assert init.returncode == 0, init.stderr
    code = _code(init.stdout)
    first = _account(a)
    with a.client(timeout=60) as c:
        for attempt in (lambda: c.rekey("passphrase", new_passphrase="the attacker's"), lambda: c.recovery_code()):
            with pytest.raises(errors.BadPassphrase, match="no approval PIN yet"):
                attempt()
        c.approval_pin(PIN)
        with pytest.raises(errors.BadPassphrase, match="not this vault's approval PIN"):
            c.rekey("passphrase", "a guess", "the attacker's")
        with pytest.raises(errors.BadPassphrase, match="not this vault's approval PIN"):
            c.recovery_code("a guess")
        with pytest.raises(errors.BadPassphrase):
            c.approval_pin("the attacker's pin")  # a PIN is replaced only with the current one
        assert c.status()["key_source"] == "keyring" and c.status()["approval_pin_failures"] == 2
    assert _keystore(secret_service, "get", first) is not None  # nothing moved
    assert _code(init.stdout) == code
    refused = a.cli("recovery-code")
    assert refused.returncode == 1 and "Approval PIN" not in refused.stdout
    made = a.cli("recovery-code", input=PIN + "\n")
    assert made.returncode == 0, made.stderr
    assert _code(made.stdout) != code


def test_the_cli_says_to_set_a_pin_first(ss_agent: AgentProcess) -> None:
    a = ss_agent
    assert a.cli("init", "--key-source", "keyring").returncode == 0
    done = a.cli("rekey", "--key-source", "passphrase", input="x\n")
    assert done.returncode == 1
    assert "has no approval PIN yet" in done.stderr and "agent approve --set-pin" in done.stderr


def test_rekey_keyring_to_passphrase_and_back(ss_agent: AgentProcess, secret_service: SecretService) -> None:
    a = ss_agent
    assert a.cli("init", "--key-source", "keyring").returncode == 0
    assert a.cli("set", "runpod", input=RP + "\n").returncode == 0
    first = _account(a)
    assert _keystore(secret_service, "get", first) is not None
    with a.client(timeout=30) as c:
        c.approval_pin(PIN)
    done = a.cli("rekey", "--key-source", "passphrase", input=PIN + "\n" + PASSPHRASE + "\n")
    assert done.returncode == 0, done.stderr
    assert "master key now in: passphrase" in done.stdout
    assert _keystore(secret_service, "get", first) is None  # the old home is gone
    assert {"kdf", "wrapped_key"} <= _meta_keys(a) and "key_account" not in _meta_keys(a)
    _restart(a)
    assert a.cli("get", "runpod").returncode == 3  # a passphrase vault now
    assert a.cli("unlock", input=PASSPHRASE + "\n").returncode == 0
    assert a.cli("get", "runpod").stdout == RP + "\n"
    back = a.cli("rekey", "--key-source", "keyring", input=PASSPHRASE + "\n")
    assert back.returncode == 0, back.stderr
    assert not {"kdf", "wrapped_key", "unlock_failures"} & _meta_keys(a)
    assert _keystore(secret_service, "get", _account(a)) is not None
    _restart(a)
    assert a.cli("get", "runpod").stdout == RP + "\n"  # unlocked by itself from the keystore


def test_recover_a_keyring_vault_whose_entry_is_gone(ss_agent: AgentProcess, secret_service: SecretService) -> None:
    """A new desktop, or a lost login keyring: the code puts the key back in the keystore."""
    a = ss_agent
    init = a.cli("init", "--key-source", "keyring", "--recovery-code")
    assert init.returncode == 0, init.stderr
    code = _code(init.stdout)
    assert a.cli("set", "runpod", input=RP + "\n").returncode == 0
    _keystore(secret_service, "delete", _account(a))
    _restart(a)
    lost = a.cli("get", "runpod")
    assert lost.returncode == 1 and "missing from the OS keystore" in lost.stderr
    done = a.cli("recover", input=code + "\n")  # to where it was: the keystore
    assert done.returncode == 0, done.stderr
    assert "master key now in: keyring" in done.stdout
    assert _keystore(secret_service, "get", _account(a)) is not None
    _restart(a)
    assert a.cli("get", "runpod").stdout == RP + "\n"
    # or away from the keystore, to a passphrase
    _keystore(secret_service, "delete", _account(a))
    _restart(a)
    assert a.cli("recover", "--key-source", "passphrase", input=code + "\n" + NEW + "\n").returncode == 0
    _restart(a)
    assert a.cli("unlock", input=NEW + "\n").returncode == 0
    assert a.cli("get", "runpod").stdout == RP + "\n"


def test_an_old_keystore_entry_that_could_not_go_is_removed_at_the_next_unlock(
    ss_agent: AgentProcess, secret_service: SecretService
) -> None:
    a = ss_agent
    assert a.cli("init", "--key-source", "keyring").returncode == 0
    first = _account(a)
    with a.client(timeout=60) as c:
        c.approval_pin(PIN)
        secret_service.pause()  # the keystore stops answering after the new wrapping is written
        try:
            result = c.rekey("passphrase", PIN, new_passphrase=PASSPHRASE)
        finally:
            secret_service.resume()
    assert result == {"key_source": "passphrase", "old_removed": False}
    # the vault opens with the passphrase already; the old entry waits for its removal (the
    # abandoned delete may still land once the keystore answers again: either way is fine)
    assert "retired_source" in _meta_keys(a)
    assert a.cli("lock").returncode == 0 and a.cli("unlock", input=PASSPHRASE + "\n").returncode == 0
    assert _keystore(secret_service, "get", first) is None
    assert not {"retired_source", "key_account"} & _meta_keys(a)


# --- no secret anywhere but the vault, wrapped ---------------------------------------------
def _argv_of_every_process() -> str:
    out = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                out.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    return "\n".join(out)


def _files_holding(root: Path, needles: list[str]) -> list[str]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            found += [f"{path}: {n!r}" for n in needles if n.encode() in data]
    return found


def test_codes_and_passphrases_reach_no_log_argv_or_file(ss_agent: AgentProcess) -> None:
    a = ss_agent
    t = a.terminal("init", "--key-source", "passphrase")
    t.answer("New passphrase: ", PASSPHRASE)
    t.answer("Repeat: ", PASSPHRASE)
    t.answer("Print a recovery code", "y")
    assert t.wait() == 0, t.output
    code = _code(t.output.replace("\r\n", "\n"))
    assert a.cli("set", "runpod", input=RP + "\n").returncode == 0
    assert a.cli("rekey", "--key-source", "keyring", input=PASSPHRASE + "\n").returncode == 0
    t = a.terminal("approve", "--set-pin")
    t.answer("New approval PIN: ", PIN)
    t.answer("Repeat: ", PIN)
    assert t.wait() == 0, t.output
    assert a.cli("rekey", "--key-source", "passphrase", input=PIN + "\n" + NEW + "\n").returncode == 0
    t = a.terminal("recover")
    t.answer("Recovery code: ", code)
    t.expect("New passphrase: ")
    argv = _argv_of_every_process() + subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    t.answer("", PASSPHRASE)
    t.answer("Repeat: ", PASSPHRASE)
    assert t.wait() == 0, t.output
    secrets = [code, code.replace("-", ""), PASSPHRASE, NEW, RP, PIN]
    assert not [s for s in secrets if s in argv]
    a.stop()  # the log is complete
    assert not [s for s in secrets if s in a.log()]
    assert "recovered the vault" in a.log()
    assert not _files_holding(a.home, secrets)
