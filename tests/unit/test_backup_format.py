"""The backup file's format and a restore's plan (agent/backup.py), pure: no agent, no
sockets. scrypt runs at a small cost here; the file carries its cost, so a restore reads
it as it would the default's (tests/cli/test_backup_cli.py runs that)."""

from __future__ import annotations

import msgpack
import pytest

from agent import backup, crypto

CHEAP = (2**10, 8, 1)
PASS = "a passphrase for the format tests"
A = backup.Credential("svc-a", "api-key", "value-of-a-Canary", {"k": "v"}, 4102444800.0, 1.0, 2.0)
B = backup.Credential("svc-b", "token", "value-of-b-Canary", {}, None, 1.0, 2.0)


def sealed(credentials: list[backup.Credential] = [A, B]) -> str:  # noqa: B006 - never mutated
    return backup.seal(backup.pack(credentials, "0.1.0", 1700000000.0), PASS, CHEAP)


def test_a_sealed_backup_opens_to_what_went_in() -> None:
    opened = backup.open_sealed(backup.parse(sealed().encode()), PASS)
    assert opened.credentials == (A, B)
    assert (opened.created, opened.agent_version, opened.history) == (1700000000.0, "0.1.0", 0)


def test_no_repr_holds_a_value_and_the_keys_are_hidden() -> None:
    assert "Canary" not in repr(A)
    assert "svc-a" in repr(A)
    keys = crypto.backup_keys(PASS, crypto.KdfParams(b"s" * 16, *CHEAP))
    assert repr(keys) == "BackupKeys(<keys hidden>)"
    assert "Canary" not in repr(backup.parse(sealed().encode()))


def test_the_header_is_four_lines_and_the_rest_is_base64() -> None:
    lines = sealed().splitlines()
    assert lines[0] == "credential-agent backup 1"
    assert lines[1].startswith("kdf scrypt n=1024 r=8 p=1 salt=")
    assert lines[2].startswith("cipher aes-256-gcm nonce=")
    assert lines[3].startswith("mac ")
    assert all(len(line) <= 76 for line in lines[4:])


def test_a_copy_with_crlf_line_ends_still_opens() -> None:
    text = sealed().replace("\n", "\r\n")
    assert backup.open_sealed(backup.parse(text.encode()), PASS).credentials == (A, B)


def test_two_backups_of_the_same_vault_share_no_bytes_past_the_magic() -> None:
    one, two = sealed().splitlines(), sealed().splitlines()
    assert one[0] == two[0]
    assert all(x != y for x, y in zip(one[1:], two[1:], strict=False))  # fresh salt and nonce each time


@pytest.mark.parametrize(
    ("n", "r", "p", "why"),
    [
        (1000, 8, 1, "scrypt parameters no scrypt takes"),
        (2**10, 0, 1, "scrypt parameters no scrypt takes"),
        (2**10, 8, 17, "scrypt parameters no scrypt takes"),
        (2**21, 8, 1, "asks scrypt for 2048 MiB, more than the 1024 MiB this agent allows"),
    ],
)
def test_a_header_that_would_take_the_machine_is_refused_before_scrypt(n: int, r: int, p: int, why: str) -> None:
    text = sealed().replace("n=1024 r=8 p=1", f"n={n} r={r} p={p}", 1)
    with pytest.raises(backup.BackupError, match=why):
        backup.parse(text.encode())


def test_the_default_cost_is_within_what_a_restore_allows() -> None:
    params = crypto.KdfParams(b"s" * 16, *crypto.BACKUP_KDF)
    assert crypto.kdf_memory(params) == 256 * 2**20
    assert crypto.kdf_memory(params) * 4 == crypto.MAX_KDF_MEMORY  # room to grow


def test_a_wrong_passphrase_is_told_from_damage() -> None:
    text = sealed()
    with pytest.raises(backup.BackupError, match="wrong passphrase") as caught:
        backup.open_sealed(backup.parse(text.encode()), "another passphrase")
    assert caught.value.wrong_passphrase
    lines = text.split("\n")
    body = lines[4]
    lines[4] = ("B" if body[0] != "B" else "C") + body[1:]
    with pytest.raises(backup.BackupError, match="damaged or truncated") as caught:
        backup.open_sealed(backup.parse("\n".join(lines).encode()), PASS)
    assert not caught.value.wrong_passphrase


def test_the_payload_may_hold_history_and_keys_this_agent_does_not_know() -> None:
    row = {"platform": "svc-a", "credential_type": "api-key", "value": "v", "metadata": {}, "expires_at": None,
           "history": [{"value": "older", "replaced": 1.0}], "future": True}
    raw = msgpack.packb({"format": 1, "created": 1.0, "agent_version": "9", "credentials": [row], "more": 1})
    opened = backup.unpack(raw)
    assert opened.history == 1 and opened.credentials[0].value == "v"
    with pytest.raises(backup.BackupError, match="format 2, newer than this agent reads"):
        backup.unpack(msgpack.packb({"format": 2, "credentials": []}))
    with pytest.raises(backup.BackupError, match="lists a credential twice"):
        backup.unpack(msgpack.packb({"format": 1, "credentials": [row, row]}))
    with pytest.raises(backup.BackupError, match="credential 1 of the backup is not one"):
        backup.unpack(msgpack.packb({"format": 1, "credentials": [{**row, "value": 5}]}))


def _changed(c: backup.Credential, **kw: object) -> backup.Credential:
    import dataclasses

    return dataclasses.replace(c, **kw)  # type: ignore[arg-type]


C = backup.Credential("svc-c", "api-key", "value-of-c", {}, None)


def test_the_plan_of_each_mode() -> None:
    local = {A.key: _changed(A, value="other"), C.key: C}  # A differs, B is missing, C only local
    team = {B.key: "ml"}

    def plan(**kw: bool) -> dict[str, tuple[str, str | None]]:
        steps = backup.plan([A, B], local, team, **{"overwrite": False, "replace": False, **kw})
        return {s.name: (s.action, s.note) for s in steps}

    kept = ("keep", "value differs; the vault's is kept, --overwrite takes the backup's")
    added = ("add", "shadows the key of the team vault ml")
    assert plan() == {"svc-a/api-key": kept, "svc-b/token": added}
    assert plan(overwrite=True) == {"svc-a/api-key": ("replace", "value differs"), "svc-b/token": added}
    assert plan(replace=True) == {
        "svc-a/api-key": ("replace", "value differs"),
        "svc-b/token": added,
        "svc-c/api-key": ("delete", "not in the backup"),
    }
    unreadable: dict[tuple[str, str], backup.Credential | str | None] = {
        A.key: _changed(A, metadata={}, expires_at=None),
        B.key: "denied by an access rule",  # why the vault's copy could not be read
    }
    steps = {s.name: (s.action, s.note) for s in backup.plan([A, B], unreadable, {}, overwrite=True, replace=False)}
    assert steps["svc-a/api-key"] == ("replace", "metadata, expiry differ")
    assert steps["svc-b/token"] == ("replace", "the vault's copy cannot be read (denied by an access rule)")
    assert [s.action for s in backup.plan([A], {A.key: A}, {}, overwrite=True, replace=True)] == ["same"]
