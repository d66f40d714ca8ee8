"""`agent backup` and `agent restore` against real `agent serve` processes: the round
trip, what the file shows (nothing), how it is written, what is refused and that it
changes nothing, merge / --overwrite / --replace / --dry-run, 2,000 credentials, the
prompts at a real terminal, and where the passphrase never goes.

Each backup and each restore that gets as far as the passphrase costs one scrypt at
the backup's real parameters (256 MiB, about a second here): the tests share files
where they can."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from support import AgentProcess

OK, ERROR, USAGE, LOCKED = 0, 1, 2, 3
PASS = "a backup passphrase of some length"
# names and values long and odd enough that none turns up in a file of random bytes by chance
ALPHA, BETA, GAMMA, DELTA = "svc-alpha-q7k3m", "svc-beta-x9w2p", "svc-gamma-r4t8z", "svc-delta-j6h1v"
VALUES = {
    (ALPHA, "api-key"): "alpha-Value-0123456789-CanaryA",
    (BETA, "deploy-token"): "-----BEGIN KEY-----\nbeta-Value-CanaryB-9876543210\n-----END KEY-----",
    (GAMMA, "api-key"): "gamma-Value-CanaryC-5555512345",
}
META = {"owner": "owner-Canary-Meta-77", "scopes": ["read-Canary-Scope", "write"]}
EXPIRES = 4102444800.0  # 2100-01-01


def seed(a: AgentProcess) -> None:
    with a.client() as c:
        for (platform, ctype), value in VALUES.items():
            meta = META if platform == ALPHA else None
            c.store(platform, value, ctype, meta, validate=False, expires_at=EXPIRES if platform == BETA else None)


def state(a: AgentProcess) -> dict[tuple[str, str], tuple[Any, ...]]:
    """Every credential: value, metadata, expiry and updated time (a rewrite changes it)."""
    with a.client(timeout=60) as c:
        listed = c.list()
        names = [(e["platform"], e["credential_type"]) for e in listed]
        values = [v for i in range(0, len(names), 200) for v in c.get_many(names[i:i + 200])]
    return {
        (e["platform"], e["credential_type"]): (v, e["metadata"], e["expires_at"], e["updated"])
        for e, v in zip(listed, values, strict=True)
    }


def content(a: AgentProcess) -> dict[tuple[str, str], tuple[Any, ...]]:
    """``state`` less the times a restore sets anew."""
    return {k: v[:3] for k, v in state(a).items()}


def backup(a: AgentProcess, path: Path, *args: str, passphrase: str = PASS) -> subprocess.CompletedProcess[str]:
    return a.cli("backup", str(path), *args, input=passphrase + "\n", timeout=120)


def restore(a: AgentProcess, path: Path, *args: str, passphrase: str = PASS) -> subprocess.CompletedProcess[str]:
    return a.cli("restore", str(path), *args, input=passphrase + "\n", timeout=120)


def fresh_agent() -> AgentProcess:
    a = AgentProcess().start()
    a.init_passphrase()
    return a


@pytest.fixture
def seeded(unlocked_agent: AgentProcess) -> AgentProcess:
    seed(unlocked_agent)
    return unlocked_agent


# --- the round trip and the file ----------------------------------------------------------
def test_a_backup_restores_into_a_fresh_vault_and_shows_nothing(seeded: AgentProcess) -> None:
    a = seeded
    path = a.home / "vault.backup"
    done = backup(a, path)
    assert done.returncode == OK, done.stderr
    assert f"backed up 3 credentials to {path}" in done.stdout
    assert stat.S_IMODE(path.lstat().st_mode) == 0o600

    raw = path.read_bytes()
    assert raw.startswith(b"credential-agent backup 1\nkdf scrypt n=262144 r=8 p=1 salt=")
    secrets = [ALPHA, BETA, GAMMA, "deploy-token", *VALUES.values(), META["owner"], META["scopes"][0]]
    pieces = [line for v in VALUES.values() for line in v.splitlines()]  # a PEM's lines, one by one
    for text in [*secrets, *pieces, PASS]:
        assert text.encode() not in raw, text
        assert text not in done.stdout + done.stderr

    b = fresh_agent()
    try:
        done = restore(b, path)
        assert done.returncode == OK, done.stderr
        assert "restored: 3 added" in done.stdout
        assert content(b) == content(a)
        assert content(b)[(ALPHA, "api-key")][1] == META
        assert content(b)[(BETA, "deploy-token")][2] == EXPIRES
        for text in [*VALUES.values(), PASS]:
            assert text not in done.stdout + done.stderr
            assert text not in a.log() + b.log()
    finally:
        b.cleanup()


def test_a_backup_never_overwrites_without_force_nor_follows_a_symlink(seeded: AgentProcess) -> None:
    a = seeded
    path = a.home / "exists.backup"
    path.write_text("keep me")
    done = backup(a, path)
    assert done.returncode == ERROR
    assert done.stderr == f"agent: {path} already exists; nothing was written (--force replaces it)\n"
    assert path.read_text() == "keep me"

    target = a.home / "target.txt"
    target.write_text("not yours to write")
    link = a.home / "link.backup"
    link.symlink_to(target)
    done = backup(a, link)
    assert done.returncode == ERROR and "already exists" in done.stderr
    done = backup(a, link, "--force")
    assert done.returncode == OK, done.stderr
    assert target.read_text() == "not yours to write"  # the link was replaced, not followed
    assert not link.is_symlink() and stat.S_IMODE(link.lstat().st_mode) == 0o600
    assert link.read_bytes().startswith(b"credential-agent backup 1\n")
    assert [p.name for p in a.home.iterdir() if p.name.endswith(".tmp")] == []


def test_a_locked_agent_writes_no_backup(seeded: AgentProcess) -> None:
    a = seeded
    with a.client() as c:
        c.lock()
    path = a.home / "locked.backup"
    done = backup(a, path)
    assert done.returncode == LOCKED, done.stderr
    assert done.stderr.startswith("agent: ") and done.stderr.count("\n") == 1
    assert not path.exists()


def test_a_keystore_vault_backs_up_after_a_restart_without_unlock(keyring_agent: AgentProcess) -> None:
    """What a timer meets: a keystore vault an agent restarted since is locked, but not
    by `agent lock`; it opens itself on the first read, as for `get`, and the backup
    holds the metadata a locked listing leaves out."""
    a = keyring_agent
    with a.client(timeout=30) as c:
        c.init("keyring")
    seed(a)
    backed = content(a)
    a.stop()
    a.start()
    with a.client() as c:
        assert c.status()["locked"] is True
    path = a.home / "keystore.backup"
    assert backup(a, path).returncode == OK
    b = fresh_agent()
    try:
        assert restore(b, path).returncode == OK
        assert content(b) == backed
    finally:
        b.cleanup()


# --- refusals: one line, nothing changed ----------------------------------------------------
def test_a_wrong_passphrase_or_a_damaged_file_changes_nothing(seeded: AgentProcess) -> None:
    a = seeded
    path = a.home / "good.backup"
    assert backup(a, path).returncode == OK
    with a.client() as c:  # so that a restore would change something
        c.delete(ALPHA)
        c.store(GAMMA, "gamma-changed-value-xyz", validate=False)
        c.store(DELTA, "delta-value-only-local", validate=False)
    before = state(a)
    raw = path.read_bytes()
    lines = raw.split(b"\n")

    def refused(data: bytes | None, why: str, *args: str, passphrase: str = PASS) -> None:
        target = path
        if data is not None:
            target = a.home / "bad.backup"
            target.write_bytes(data)
        done = restore(a, target, "--replace", "--yes", *args, passphrase=passphrase)
        assert done.returncode == ERROR, (why, done.stdout, done.stderr)
        assert done.stdout == ""
        assert done.stderr.count("\n") == 1 and done.stderr.endswith("; nothing was changed\n"), done.stderr
        assert why in done.stderr, done.stderr
        assert state(a) == before

    refused(None, "wrong passphrase for this backup", passphrase="not the passphrase at all")
    flipped = bytearray(raw)
    at = len(b"\n".join(lines[:4])) + 1 + 10  # in the body
    flipped[at] = ord("A") if flipped[at] != ord("A") else ord("B")
    refused(bytes(flipped), "damaged or truncated")
    salted = bytearray(raw)
    at = raw.index(b"salt=") + 6
    salted[at] = ord("A") if salted[at] != ord("A") else ord("B")
    refused(bytes(salted), "wrong passphrase for this backup (or its header was changed)")
    cut = len(b"\n".join(lines[:5])) + 1  # the header and one line of the body
    refused(raw[:cut], "damaged or truncated")
    refused(raw[: len(raw) - 40], "damaged")
    refused(raw[:60], "truncated")
    refused(b"{}", "not a credential-agent backup")
    done = restore(a, Path("/dev/zero"))  # not read whole: it has no end
    assert done.returncode == ERROR and "not a credential-agent backup" in done.stderr
    refused(raw.replace(b"backup 1\n", b"backup 9\n", 1), "this backup is format 9")
    heavy = raw.replace(b"n=262144", b"n=268435456", 1)
    refused(heavy, "MiB, more than the 1024 MiB this agent allows")


def test_an_unreadable_credential_is_named_left_out_and_restorable(seeded: AgentProcess) -> None:
    """A row that fails its integrity check: the backup names it and keeps the rest
    (exit 1); a restore from an earlier backup replaces it with --overwrite."""
    import sqlite3

    from support import PASSPHRASE

    a = seeded
    good = a.home / "before.backup"
    assert backup(a, good).returncode == OK
    backed = content(a)
    a.stop()
    db = sqlite3.connect(a.home / "data" / "credential-agent" / "vault.sqlite3")
    db.execute("UPDATE credentials SET value = (SELECT value FROM credentials WHERE platform = ?) "
               "WHERE platform = ?", (GAMMA, ALPHA))  # a token from another row
    db.commit()
    db.close()
    a.start()
    with a.client(timeout=30) as c:
        c.unlock(PASSPHRASE)

    done = backup(a, a.home / "after.backup", "--json")
    assert done.returncode == ERROR
    assert json.loads(done.stdout)["credentials"] == 2
    assert json.loads(done.stdout)["failed"] == [f"{ALPHA}/api-key"]
    assert done.stderr.startswith(f"agent: {ALPHA}/api-key was left out: ") and done.stderr.count("\n") == 1

    done = restore(a, good)
    assert done.returncode == OK, done.stderr
    assert f"kept      {ALPHA}/api-key  (the vault's copy cannot be read" in done.stdout
    done = restore(a, good, "--overwrite")
    assert done.returncode == OK, done.stderr
    assert f"replaced  {ALPHA}/api-key  (the vault's copy cannot be read" in done.stdout
    assert content(a) == backed


def test_access_rules_hold_for_a_backup_and_a_restore() -> None:
    """`agent backup` reads values as any program does: a key an access rule denies it
    is named and left out (exit 1), and a restore reports the vault's copy as unread."""
    from support import short_tmpdir

    home = short_tmpdir()
    config = home / "config.toml"
    config.write_text(f'[access."{ALPHA}"]\nrule = "deny"\n')
    a = AgentProcess(home=home, env={"CREDENTIAL_AGENT_CONFIG": str(config)}).start()
    try:
        a.init_passphrase()
        seed(a)
        path = a.home / "ruled.backup"
        done = backup(a, path, "--json")
        assert done.returncode == ERROR
        assert json.loads(done.stdout)["credentials"] == 2
        assert done.stderr.startswith(f"agent: {ALPHA}/api-key was left out: ") and "access" in done.stderr
        done = restore(a, path, "--dry-run")
        assert done.returncode == OK, done.stderr
        assert f"delete    {ALPHA}" not in done.stdout  # not in the backup, and not asked to replace
        done = restore(a, path, "--dry-run", "--replace")
        assert f"delete    {ALPHA}/api-key  (not in the backup)" in done.stdout

        b = fresh_agent()  # a machine without the rule
        try:
            seed(b)
            full = a.home / "full.backup"
            assert backup(b, full).returncode == OK
        finally:
            b.cleanup()
        done = restore(a, full, "--dry-run")
        assert done.returncode == OK, done.stderr
        kept = next(line for line in done.stdout.splitlines() if ALPHA in line)
        assert kept.startswith(f"  keep      {ALPHA}/api-key  (the vault's copy cannot be read (") and "access" in kept
    finally:
        a.cleanup()


# --- merge, --overwrite, --replace, --dry-run --------------------------------------------------
def test_merge_overwrite_replace_and_dry_run(seeded: AgentProcess) -> None:
    a = seeded
    path = a.home / "plan.backup"
    assert backup(a, path).returncode == OK
    backed = content(a)
    with a.client() as c:
        c.delete(ALPHA)
        c.store(GAMMA, "gamma-changed-value-xyz", validate=False)
        c.store(DELTA, "delta-value-only-local", validate=False)
    changed = state(a)

    def plan(*args: str) -> dict[str, str]:
        done = restore(a, path, "--dry-run", "--json", *args)
        assert done.returncode == OK, done.stderr
        report = json.loads(done.stdout)
        assert report["dry_run"] is True
        assert state(a) == changed  # a dry run changes nothing
        return {i["name"]: i["action"] for i in report["items"]}

    alpha, beta, gamma, delta = f"{ALPHA}/api-key", f"{BETA}/deploy-token", f"{GAMMA}/api-key", f"{DELTA}/api-key"
    assert plan() == {alpha: "add", beta: "same", gamma: "keep"}
    assert plan("--overwrite") == {alpha: "add", beta: "same", gamma: "replace"}
    assert plan("--replace") == {alpha: "add", beta: "same", gamma: "replace", delta: "delete"}
    done = restore(a, path, "--dry-run", "--replace")
    assert "dry run (replace): nothing was changed" in done.stdout
    assert f"delete    {delta}  (not in the backup)" in done.stdout
    assert "would be: 1 added, 1 replaced, 1 deleted, 1 unchanged" in done.stdout
    for value in [*VALUES.values(), "gamma-changed-value-xyz", "delta-value-only-local"]:
        assert value not in done.stdout + done.stderr

    # merge: what the vault lacks comes back; what differs stays as the vault has it
    done = restore(a, path)
    assert done.returncode == OK, done.stderr
    assert f"kept      {gamma}  (value differs; the vault's is kept, --overwrite takes the backup's)" in done.stdout
    assert "restored: 1 added, 1 kept, 1 unchanged" in done.stdout
    now = content(a)
    assert now[(ALPHA, "api-key")] == backed[(ALPHA, "api-key")]
    assert now[(GAMMA, "api-key")][0] == "gamma-changed-value-xyz"
    assert (DELTA, "api-key") in now

    # --overwrite: the backup wins, and what only the vault has stays
    done = restore(a, path, "--overwrite", "--json")
    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout)["counts"] == {
        "added": 0, "replaced": 1, "deleted": 0, "kept": 0, "unchanged": 2, "failed": 0
    }
    now = content(a)
    assert now[(GAMMA, "api-key")] == backed[(GAMMA, "api-key")]
    assert (DELTA, "api-key") in now

    # --replace from a script: refused without --yes; with it, the vault equals the backup
    before = state(a)
    done = restore(a, path, "--replace")
    assert done.returncode == USAGE
    assert done.stderr == (
        "agent: restore --replace would replace 0 and delete 1 credential of the vault; --yes does it from a "
        "script (--dry-run lists them); nothing was changed\n"
    )
    assert state(a) == before
    done = restore(a, path, "--replace", "--yes")
    assert done.returncode == OK, done.stderr
    assert "restored: 1 deleted, 3 unchanged" in done.stdout
    assert content(a) == backed

    # what a restore replaced or deleted is in the history (docs/history.md): undoable
    with a.client() as c:
        assert [r["reason"] for r in c.history(DELTA)] == ["deleted"]
        assert c.history_value(DELTA, 1)["value"] == "delta-value-only-local"
        assert c.history_value(GAMMA, 1)["value"] == "gamma-changed-value-xyz"


def test_a_restore_takes_a_backup_that_holds_history(unlocked_agent: AgentProcess) -> None:
    """The payload's ``history`` is reserved for a vault that keeps previous values: a
    restore accepts it (and says what it left). The file's scrypt cost is read from its
    header: this one is cheap, as an older or newer default would be."""
    from agent import backup as fmt

    a = unlocked_agent
    cred = fmt.Credential(ALPHA, "api-key", "current-value-Canary-H1", {}, None, 1.0, 2.0,
                          ({"value": "older-value-Canary-H0", "replaced": 1.5},))
    path = a.home / "history.backup"
    path.write_text(fmt.seal(fmt.pack([cred], "0.2.0", time.time()), PASS, cost=(2**12, 8, 1)))
    done = restore(a, path)
    assert done.returncode == OK, done.stderr
    assert "history: 1 previous value in the backup, not restored (current values only)" in done.stdout
    with a.client() as c:
        assert c.get(ALPHA) == "current-value-Canary-H1"


# --- size ---------------------------------------------------------------------------------------
def test_two_thousand_credentials_back_up_and_restore(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    n = 2000
    stores = [
        ("store", {"platform": f"bulk-{i:05d}-k", "value": f"bulk-value-{i:05d}-" + "x" * 40, "validate": False,
                   "metadata": {"i": i, "note": "n" * 100}})
        for i in range(n)
    ]
    with a.client(timeout=120) as c:
        for start in range(0, n, 100):
            assert all(r is None or isinstance(r, dict) for r in c.call_many(stores[start:start + 100]))
    path = a.home / "big.backup"
    done = backup(a, path, "--json")
    assert done.returncode == OK, done.stderr
    assert json.loads(done.stdout)["credentials"] == n
    b = fresh_agent()
    try:
        done = restore(b, path, "--json")
        assert done.returncode == OK, done.stderr
        assert json.loads(done.stdout)["counts"]["added"] == n
        assert content(b) == content(a)
        done = restore(b, path, "--dry-run", "--replace")
        assert done.returncode == OK, done.stderr
        assert f"would be: {n} unchanged" in done.stdout
    finally:
        b.cleanup()


# --- a person at a terminal ---------------------------------------------------------------------
def test_the_passphrases_at_a_terminal(seeded: AgentProcess) -> None:
    a = seeded
    path = a.home / "typed.backup"
    t = a.terminal("backup", str(path))
    t.answer("Backup passphrase: ", "short")
    t.answer("Use it anyway? [y/N] ", "n")
    t.answer("Backup passphrase: ", PASS)
    t.answer("Repeat: ", PASS + " but not the same")
    t.expect("the two entries differ; again")
    t.answer("Backup passphrase: ", PASS)
    t.answer("Repeat: ", PASS)
    assert t.wait() == OK, t.output
    assert "backed up 3 credentials" in t.output
    assert PASS not in t.output  # hidden prompts: nothing typed is echoed

    with a.client() as c:
        c.store(DELTA, "delta-value-only-local", validate=False)
    t = a.terminal("restore", str(path), "--replace")
    t.answer("Backup passphrase: ", "not it")
    t.expect("wrong passphrase, try again")
    t.answer("Backup passphrase: ", PASS)
    t.expect(f"Make the vault equal to {path}: replace 0 and delete 1 credential? [y/N] ")
    t.send("n\r")
    assert t.wait() == ERROR
    assert "agent: nothing was changed" in t.output
    assert (DELTA, "api-key") in content(a)

    t = a.terminal("restore", str(path), "--replace")
    t.answer("Backup passphrase: ", PASS)
    t.answer("[y/N] ", "y")
    assert t.wait() == OK, t.output
    assert "restored: 1 deleted, 3 unchanged" in t.output
    assert (DELTA, "api-key") not in content(a)


# --- where the passphrase never goes ----------------------------------------------------------------
def test_the_passphrase_comes_from_a_private_file_or_stdin_never_argv(seeded: AgentProcess) -> None:
    a = seeded
    done = a.cli("backup", str(a.home / "argv.backup"), "--passphrase", PASS)
    assert done.returncode == USAGE and "unrecognized arguments" in done.stderr  # no way to give it in argv
    assert not (a.home / "argv.backup").exists()

    secret = a.home / "backup.pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o644)
    path = a.home / "timer.backup"
    done = a.cli("backup", str(path), "--passphrase-file", str(secret))
    assert done.returncode == ERROR
    assert done.stderr == (
        f"agent: the passphrase file {secret} must be yours and private (mode 0644; chmod 600 {secret})\n"
    )
    assert not path.exists()
    secret.chmod(0o600)
    seen: set[str] = set()
    proc = subprocess.Popen(a.command("backup", str(path), "--passphrase-file", str(secret)), env=a.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while proc.poll() is None:  # every process's argv while the backup runs (the agent's too)
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"))
                except OSError:
                    pass
    _, err = proc.communicate()
    assert proc.returncode == OK, err
    assert any("timer.backup" in cmd for cmd in seen)  # the scan saw the backup run
    assert not any(PASS in cmd for cmd in seen)
    b = fresh_agent()
    try:
        done = b.cli("restore", str(path), "--passphrase-file", str(secret), timeout=120)
        assert done.returncode == OK, done.stderr
        assert content(b) == content(a)
        for log in (a.log(), b.log()):
            assert PASS not in log
            assert not any(v in log for v in VALUES.values())
    finally:
        b.cleanup()


# --- the documented schedule ----------------------------------------------------------------------
def _unit_lines(doc: str, unit: str) -> dict[str, str]:
    """The ``Key=value`` lines of the ini block that follows ``unit``'s name in the doc."""
    after = doc[doc.index(f"`~/.config/systemd/user/{unit}`"):]
    block = after[after.index("```ini\n") + 7:]
    block = block[:block.index("```")]
    return dict(line.split("=", 1) for line in block.splitlines() if "=" in line and not line.startswith("#"))


def test_the_documented_timer_backs_up_and_a_locked_agent_fails_it(seeded: AgentProcess) -> None:
    """docs/backup.md's service, run as systemd would run it (its specifiers %h, %% and
    $$ expanded): a dated file, old ones pruned; a locked vault: exit 3 and no file."""
    import re
    import shlex
    import sys

    a = seeded
    doc = (Path(__file__).resolve().parents[2] / "docs" / "backup.md").read_text()
    service = _unit_lines(doc, "credential-agent-backup.service")
    timer = _unit_lines(doc, "credential-agent-backup.timer")
    assert service["Type"] == "oneshot" and timer["OnCalendar"] == "daily"

    def run(key: str) -> subprocess.CompletedProcess[str]:
        line = service[key].replace("%h", str(a.home)).replace("%%", "%").replace("$$", "$")
        return subprocess.run(shlex.split(line), env=a.env, capture_output=True, text=True, timeout=120)

    bin_dir = a.home / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "agent").write_text(f"#!/bin/sh\nexec {sys.executable} -m agent \"$@\"\n")
    (bin_dir / "agent").chmod(0o755)
    (a.home / "backups").mkdir()
    (a.home / ".config" / "credential-agent").mkdir(parents=True)
    secret = a.home / ".config" / "credential-agent" / "backup.pass"
    secret.write_text(PASS + "\n")
    secret.chmod(0o600)
    old = a.home / "backups" / "credentials-2000-01-01.backup"
    old.write_text("an old backup")
    os.utime(old, (time.time() - 40 * 86400,) * 2)

    done = run("ExecStart")
    assert done.returncode == OK, done.stderr
    made = {p.name for p in (a.home / "backups").iterdir()} - {old.name}
    assert len(made) == 1 and re.fullmatch(r"credentials-\d{4}-\d{2}-\d{2}\.backup", made.pop())
    today = next(p for p in (a.home / "backups").iterdir() if p != old)
    assert today.read_bytes().startswith(b"credential-agent backup 1\n")
    assert run("ExecStartPost").returncode == OK
    assert sorted(p.name for p in (a.home / "backups").iterdir()) == [today.name]

    today.unlink()
    with a.client() as c:
        c.lock()
    done = run("ExecStart")
    assert done.returncode == LOCKED
    assert done.stderr == "agent: the agent is locked; run `agent unlock`\n"
    assert not today.exists()
