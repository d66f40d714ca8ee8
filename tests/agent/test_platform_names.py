"""Platform names: case-insensitive, aliases under one canonical name, old vaults renamed.

Real agents on real sockets; the legacy rows are sealed with the vault's own key, as an
agent before canonical names wrote them.
"""

from __future__ import annotations

import subprocess
import sys

import msgpack
import pytest

from agent import crypto, faults
from agent.stores import Row
from client import CredentialService, errors, keyring_names
from client.names import ALIASES, CANONICAL, canonical_platform
from support import PASSPHRASE, AgentProcess, vault_store

HF = "hf_" + "t" * 30
BACKEND = "client.keyring_backend.AgentKeyring"


# --- the rule (pure) ----------------------------------------------------------------------
def test_aliases_and_case_have_one_name() -> None:
    for name in ("HF", "hf", "Hugging-Face", "hugging_face", "HuggingFace", "huggingface"):
        assert canonical_platform(name) == "huggingface"
    assert canonical_platform("Weights-And-Biases") == "wandb"
    assert canonical_platform("Lambda") == canonical_platform("lambda-labs") == "lambdalabs"
    assert canonical_platform("Vast-AI") == "vastai"
    assert canonical_platform("MyTool_2") == "mytool_2"  # unknown: lower-cased, nothing else
    assert canonical_platform("\u212a") == "\u212a"  # the Kelvin sign is left for check_name to refuse
    # the table maps onto canonical names only, never onto another alias
    assert all(canonical_platform(c) == c for c in CANONICAL)
    assert not set(ALIASES) & CANONICAL


# --- through the client, the original API, the CLI -----------------------------------------
def test_every_spelling_reaches_one_credential(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    with a.client() as c:
        c.store("HF", HF, metadata={"team": "ml"})
        for name in ("hf", "Hugging-Face", "HUGGINGFACE", "huggingface"):
            assert c.get(name) == HF
        assert c.get_many(["Hf", ("HF", "api-key")]) == [HF, HF]
        assert c.credentials_for("Hugging_Face") == {"api_key": HF}
        assert c.metadata("HF")["platform"] == "huggingface"
        c.store("MyTool", "value-1", validate=False)
        c.update("MYTOOL", "value-2", validate=False)
        assert [(e["platform"], e["credential_type"]) for e in c.list()] == [
            ("huggingface", "api-key"), ("mytool", "api-key")]
        # validation picks the rule by the canonical name: an `hf` key must start with hf_
        with pytest.raises(errors.InvalidCredential, match="hf_"):
            c.store("Hugging-Face", "not-a-token")
        assert not c.validate("HF", "not-a-token")
        c.delete("Mytool")
        with pytest.raises(errors.NotFound):
            c.get("mytool")
        # the raw protocol, as an older client sends it: the agent makes the name canonical
        assert c.call("get", {"platform": "HUGGING-FACE"}) == HF
        assert [r["platform"] for r in c.audit(platform="HF") if r["op"] == "get"] == ["huggingface"]
    with vault_store(a.home) as store:
        assert [(r.platform, r.credential_type) for r in store.rows()] == [("huggingface", "api-key")]


def test_original_api_uses_canonical_names(unlocked_agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    a = unlocked_agent
    monkeypatch.setenv("CREDENTIAL_AGENT_SOCK", str(a.socket))
    service = CredentialService()
    assert service.store_credential("Example-Platform", "v" * 25)
    assert service.get_credential("EXAMPLE-PLATFORM") == "v" * 25
    assert service.store_credential("HF", HF)
    assert service.list_platforms() == ["example-platform", "huggingface"]
    assert service.get_credential_metadata("Hf")["platform"] == "huggingface"
    assert service.delete_credential("example-PLATFORM")
    assert service.list_platforms() == ["huggingface"]


def test_cli_and_exec_agree_on_names(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    done = a.cli("set", "Hugging-Face", input=HF + "\n")
    assert done.returncode == 0, done.stderr
    assert "huggingface/api-key" in done.stdout  # says the name it stored under
    assert a.cli("get", "HF").stdout == HF + "\n"
    ls = a.cli("ls").stdout.splitlines()
    assert len(ls) == 2 and ls[1].split()[:2] == ["huggingface", "api-key"], ls
    env = a.cli("exec", "--platform", "HF", "--env", "MINE=hugging_face", "--", sys.executable, "-c",
                "import os; print(os.environ['HF_TOKEN'] == os.environ['MINE'] == " + repr(HF) + ")")
    assert env.returncode == 0 and env.stdout == "True\n", env.stderr
    assert a.cli("show", "HUGGINGFACE").returncode == 0
    assert a.cli("rm", "hf").returncode == 0
    assert a.cli("get", "huggingface").returncode == 1


# --- migrating a vault written before canonical names ----------------------------------------
def _storage(home_store: object) -> crypto.SecureStorage:
    meta = home_store.meta()  # type: ignore[attr-defined]
    salt, n, r, p = msgpack.unpackb(meta["kdf"])
    return crypto.SecureStorage(crypto.unwrap_key(meta["wrapped_key"], PASSPHRASE, crypto.KdfParams(salt, n, r, p)))


LEGACY = [  # (platform, type, value, metadata, updated)
    ("HF", "api-key", "hf_oldest", {"n": 1}, 1000.0),
    ("Hugging-Face", "api-key", "hf_newest", {"n": 2}, 3000.0),
    ("huggingface", "api-key", "hf_middle", {"n": 3}, 2000.0),
    ("huggingface-2", "api-key", "a-real-platform-of-that-name", {}, 1500.0),
    ("HF", "read", "hf_read", {}, 1000.0),
    ("MyTool", "api-key", "mytool-value", {}, 1000.0),
    ("wandb", "api-key", "w" * 40, {}, 1000.0),
    (keyring_names.PLATFORM_PREFIX + "PyPI", "user-alice", "pypi-secret", {"keyring_service": "PyPI",
                                                                          "keyring_username": "alice"}, 1000.0),
]


def write_legacy(a: AgentProcess) -> None:
    a.stop()
    with vault_store(a.home) as store:
        storage = _storage(store)
        for p, t, value, meta, updated in LEGACY:
            store.put(Row(p, t, crypto.seal(storage, p, t, "value", value),
                          crypto.seal(storage, p, t, "metadata", meta), updated, updated, None))


def raw_rows(a: AgentProcess) -> dict[tuple[str, str], bytes]:
    with vault_store(a.home) as store:
        return {(r.platform, r.credential_type): r.value for r in store.rows()}


def check_migrated(a: AgentProcess) -> None:
    with a.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
        names = {(e["platform"], e["credential_type"]): e["metadata"] for e in c.list()}
        # the newest of the three takes the canonical name; the others are kept, none lost
        assert c.get("huggingface") == "hf_newest" and names[("huggingface", "api-key")] == {"n": 2}
        assert c.get("huggingface-3") == "hf_middle"
        assert names[("huggingface-3", "api-key")] == {"n": 3, "renamed_from": "huggingface"}
        assert c.get("huggingface-4") == "hf_oldest"
        assert names[("huggingface-4", "api-key")] == {"n": 1, "renamed_from": "HF"}
        assert c.get("huggingface-2") == "a-real-platform-of-that-name"  # untouched
        assert c.get("hf", "read") == "hf_read"
        assert c.get("mytool") == "mytool-value" and c.get("wandb") == "w" * 40
        pypi = keyring_names.platform_for("PyPI")
        assert c.get(pypi, "user-alice") == "pypi-secret"
        assert sorted(names) == sorted([
            ("huggingface", "api-key"), ("huggingface-2", "api-key"), ("huggingface-3", "api-key"),
            ("huggingface-4", "api-key"), ("huggingface", "read"), ("mytool", "api-key"), ("wandb", "api-key"),
            (pypi, "user-alice")])
    assert set(raw_rows(a)) == set(names)  # on disk too, not only in the agent's memory


def test_an_old_vault_is_renamed_at_unlock_and_loses_nothing(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    write_legacy(a)
    b = AgentProcess(home=a.home).start()
    check_migrated(b)
    assert "is renamed huggingface-4/api-key" in b.log()
    # the keyring backend finds the renamed entry by its service, through the real keyring CLI
    done = subprocess.run([sys.executable, "-m", "keyring", "get", "PyPI", "alice"],
                          env={**b.env, "PYTHON_KEYRING_BACKEND": BACKEND},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "pypi-secret\n", done.stderr
    # a restart finds nothing left to rename
    b.stop()
    seen = len(b.log())  # the same log file: only what the next agent adds counts
    c = AgentProcess(home=a.home).start()
    with c.client(timeout=30) as client:
        client.unlock(PASSPHRASE)
    assert "unlocked" in c.log()[seen:] and "renamed" not in c.log()[seen:]
    c.stop()


def test_a_crash_before_the_rename_commits_leaves_the_vault_as_it_was(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    write_legacy(a)
    before = raw_rows(a)
    armed = AgentProcess(home=a.home, env={faults.ENV: "names:in-transaction"}).start()
    with armed.client(timeout=60) as c, pytest.raises(errors.AgentUnavailable):
        c.unlock(PASSPHRASE)
    assert armed.proc is not None and armed.proc.wait(30) == faults.EXIT_CODE
    assert raw_rows(a) == before  # every row under its old name, sealed as it was
    b = AgentProcess(home=a.home).start()
    check_migrated(b)  # the next unlock renames them
    b.stop()


def test_keyring_services_differing_in_case_stay_apart(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    env = {**a.env, "PYTHON_KEYRING_BACKEND": BACKEND}

    def keyring(*args: str, input: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "keyring", *args], env=env, input=input,
                              capture_output=True, text=True, timeout=60)

    for service, password in (("Service", "upper"), ("service", "lower"), ("SERVICE", "all-upper")):
        assert keyring("set", service, "Bob", input=password).returncode == 0
    for service, password in (("Service", "upper"), ("service", "lower"), ("SERVICE", "all-upper")):
        done = keyring("get", service, "Bob")
        assert done.returncode == 0 and done.stdout == password + "\n", (service, done.stderr)
    assert keyring("get", "service", "bob").returncode == 1  # usernames keep their case as well
    with a.client() as c:
        platforms = [e["platform"] for e in c.list()]
    assert len(set(platforms)) == 3 and all(p == canonical_platform(p) for p in platforms)
    assert keyring("del", "Service", "Bob").returncode == 0
    assert keyring("get", "service", "Bob").stdout == "lower\n"
    assert keyring("get", "Service", "Bob").returncode == 1


def test_a_renamed_entry_keeps_its_times(unlocked_agent: AgentProcess) -> None:
    a = unlocked_agent
    write_legacy(a)
    b = AgentProcess(home=a.home).start()
    with b.client(timeout=30) as c:
        c.unlock(PASSPHRASE)
        entry = c.metadata("huggingface")
    assert (entry["created"], entry["updated"]) == (3000.0, 3000.0)
    b.stop()


def test_a_rename_to_an_alias_lands_on_the_canonical_name(unlocked_agent: AgentProcess) -> None:
    """`mv x HF` is `mv x huggingface`: no row `HF` that a later `rm HF` or unlock would confuse."""
    with unlocked_agent.client() as c:
        c.store("scratch", "hf_" + "a" * 30, validate=False)
        c.store("huggingface", "hf_" + "b" * 30)
        with pytest.raises(errors.AlreadyExists):
            c.rename("scratch", "HF")
        c.rename("scratch", "HF", replace=True)
        names = [(e["platform"], e["credential_type"]) for e in c.list()]
        assert names == [("huggingface", "api-key")]
        assert c.get("huggingface") == "hf_" + "a" * 30
        c.delete("HF")
        assert c.list() == []


def test_a_row_stored_as_api_key_with_an_underscore_is_renamed_at_unlock(unlocked_agent: AgentProcess) -> None:
    """A vault written before `api_key` meant `api-key`: the row moves to the default type."""
    a = unlocked_agent
    a.stop()
    with vault_store(a.home) as store:
        storage = _storage(store)
        store.put(Row("runpod", "api_key", crypto.seal(storage, "runpod", "api_key", "value", "r" * 25),
                      crypto.seal(storage, "runpod", "api_key", "metadata", {}), 1000.0, 1000.0, None))
    b = AgentProcess(home=a.home).start()
    try:
        with b.client(timeout=30) as c:
            c.unlock(PASSPHRASE)
            assert [(e["platform"], e["credential_type"]) for e in c.list()] == [("runpod", "api-key")]
            assert c.get("runpod") == "r" * 25
    finally:
        b.stop()
