"""No leaks: canary values go through every path, then we look for them everywhere.

Each canary carries one random marker. It is stored, fetched, updated, refused by
validation, sent inside malformed and unknown requests, used as a wrong
passphrase, and exported. Afterwards the marker must not appear in the agent's
debug log, any reply or exception, any repr, the agent's argv or environment, or
any file except the vault (and there only as ciphertext) and an export made with
values on purpose. Credential *names* are not secret (they are listed and appear
in messages such as "no credential x/api-key"); canaries therefore travel as
values, passphrases, op names, unknown keys and malformed names, never as valid names.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import traceback
from pathlib import Path
from typing import Any

import msgpack
import pytest

from client import CredentialMigrationTool, CredentialService, SecureStorage, errors, protocol
from support import PASSPHRASE, AgentProcess, raw_request, short_tmpdir

MARK = "cnry" + secrets.token_hex(12)


def canary(i: int) -> str:
    return f"{MARK}x{i:02d}x" + "k" * 20  # valid for platforms without a rule: no spaces, 40+ chars


def frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return len(body).to_bytes(4, "big") + body


def send_raw(path: Path, data: bytes) -> bytes:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(str(path))
    out = b""
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while chunk := s.recv(65536):
            out += chunk
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        s.close()
    return out


def exception_text(e: BaseException) -> str:
    return "".join(traceback.format_exception(e)) + repr(e) + repr(e.args)


def malformed_requests() -> list[bytes]:
    """Requests carrying a canary where it does not belong."""
    c = canary
    return [
        frame({"v": 1, "op": c(10), "args": {}}),  # unknown op named like a secret
        frame({"v": 1, "op": "store", "args": {"platform": 42, "value": c(11)}}),  # wrong-typed name
        frame({"v": 1, "op": "store", "args": {"platform": "leak", "value": [c(12)]}}),  # wrong-typed value
        frame({"v": 1, "op": "get", "args": {"platform": c(13) + " /x"}}),  # malformed name
        frame({"v": 1, "op": "store", "args": {"platform": "bad name!", "value": c(14)}}),
        frame({"v": 1, "op": "get", "args": {"platform": "absent", c(15): c(16)}}),  # unknown argument
        frame({"v": 99, "op": "get", "args": {"value": c(17)}}),  # unknown version
        frame({"v": 1, "op": "store", "args": {"value": c(18)}}),  # missing name
        frame({"v": 1, "op": "store", "args": {"platform": "leak", "value": c(19), "metadata": "x"}}),
        frame({"v": 1, "op": "store", "args": {"platform": "leak", "value": c(20) + "z" * protocol.MAX_VALUE}}),
        frame([c(21)]),  # not a map
        frame({"v": 1, "op": "validate", "args": {"platform": 7, "value": c(22)}}),
        (5).to_bytes(4, "big") + c(23).encode()[:5],  # a body that is not msgpack
        frame({"v": 1, "op": "store", "args": {"platform": "leak", "value": c(24)}})[:-3],  # truncated
        b"\x00\x00\x00\x00" + c(25).encode(),  # zero length, then the secret as raw bytes
        (protocol.MAX_FRAME + 1).to_bytes(4, "big") + c(26).encode(),  # oversized
        raw_request("unlock", {"passphrase": c(27)}),  # a wrong passphrase while locked
        raw_request("init", {"key_source": c(28), "passphrase": c(29)}),
    ]


def test_canary_never_leaks(agent: AgentProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    a = agent
    seen: list[str] = []  # every reply and exception text we got back
    out_dir = short_tmpdir("ca-out-")
    try:
        with a.client(timeout=30) as c:
            c.init("passphrase", PASSPHRASE)
            # stored, fetched, updated
            c.store("leak", canary(0), metadata={"note": "ordinary metadata"})
            assert c.get("leak") == canary(0)
            c.update("leak", canary(1))
            assert c.get("leak") == canary(1)
            c.store("leak2", canary(2), "token")
            seen += [repr(c), json.dumps(c.list()), json.dumps(c.metadata("leak")), json.dumps(c.status())]
            # refused by validation
            for platform, value in (("huggingface", canary(3)), ("wandb", canary(4)), ("leak", canary(5) + "\x07tail"),
                                    ("runpod", MARK[:10])):
                with pytest.raises(errors.InvalidCredential) as info:
                    c.store(platform, value)
                seen.append(exception_text(info.value))
                seen.append(json.dumps(c.call("validate", {"platform": platform, "value": value})))
            with pytest.raises(errors.NotFound) as nf:
                c.update("absent", canary(6))
            seen.append(exception_text(nf.value))
            with pytest.raises(errors.BadRequest) as br:
                c.call("store", {"platform": "leak", "value": canary(7), "metadata": {"deep": [[[[[[[[["x"]]]]]]]]]}})
            seen.append(exception_text(br.value))

        # the seed-compatible facade: failures are logged (caplog) and return False/None
        service = CredentialService(a.client(timeout=30))
        assert service.store_credential("bad name", canary(8)) is False
        assert service.update_credential("nothing-here", canary(9)) is False
        assert service.get_credential("leak") == canary(1)
        tool = CredentialMigrationTool(service)
        # the original SecureStorage: text and token pass the wire, the error names neither
        storage = SecureStorage(a.client(timeout=30))
        token = storage.encrypt(canary(34))
        assert storage.decrypt(token) == canary(34)
        with pytest.raises(errors.InvalidToken) as it:
            storage.decrypt(token[:-5])
        seen.append(exception_text(it.value))
        storage.client.close()
        seen += [repr(service), repr(tool), repr(storage)]

        # malformed and unknown requests; then a wrong passphrase while locked
        for data in malformed_requests()[:-2]:
            seen.append(send_raw(a.socket, data).decode("utf-8", "replace"))
        with a.client(timeout=30) as c:
            c.lock()
        for data in malformed_requests()[-2:]:
            seen.append(send_raw(a.socket, data).decode("utf-8", "replace"))
        with a.client(timeout=30) as c:
            with pytest.raises(errors.BadPassphrase) as bp:
                c.unlock(canary(30))
            seen.append(exception_text(bp.value))
            c.unlock(PASSPHRASE)

        # the CLI: values only through stdin, never echoed except by `get`
        for args, stdin in ((("set", "leakcli"), canary(31)), (("validate", "huggingface"), canary(32)),
                            (("set", "huggingface"), canary(33)), (("ls",), None), (("show", "leak"), None),
                            (("ls", "--json"), None), (("status", "--json"), None)):
            done = a.cli(*args, input=stdin)
            seen += [done.stdout, done.stderr, " ".join(args)]
        assert a.cli("get", "leakcli").stdout.strip() == canary(31)  # asked for: printed

        # exports: without values (none inside) and, on purpose, with values
        plain, with_values = out_dir / "export.json", out_dir / "export-values.json"
        assert tool.export_to_json(plain) is True
        assert tool.export_to_json(with_values, include_values=True) is True
        assert MARK not in plain.read_text()
        assert canary(1) in with_values.read_text()  # the search below can see a canary

        # the agent's own argv and environment
        seen.append(Path(f"/proc/{a.pid}/cmdline").read_bytes().decode("utf-8", "replace"))
        seen.append(Path(f"/proc/{a.pid}/environ").read_bytes().decode("utf-8", "replace"))
        service.client.close()

        # reprs of the objects that hold or pass secrets, in this process
        seen += in_process_reprs(a)
    finally:
        a.stop()

    leaks = [s for s in seen if MARK in s]
    assert not leaks, f"the canary leaked into: {leaks[:3]}"
    log_text = a.log()
    assert "op store -> invalid_credential" in log_text  # the debug log did record the traffic
    assert MARK not in log_text, "the canary is in the agent's debug log"
    assert not [r for r in caplog.records if MARK in r.getMessage()], "the canary is in a client log record"

    # files: only the vault (ciphertext) and the export with values may hold it
    vault_dir = a.home / "data" / "credential-agent"
    allowed = {with_values}
    for root in (a.home, out_dir):
        for dirpath, _dirs, files in os.walk(root):
            for name in files:
                path = Path(dirpath) / name
                if path.is_socket() or path in allowed:
                    continue
                data = path.read_bytes()
                assert MARK.encode() not in data, f"the canary is in {path}"
    assert any(p.name.startswith("vault.sqlite3") for p in vault_dir.iterdir())
    shutil.rmtree(out_dir, ignore_errors=True)


def in_process_reprs(a: AgentProcess) -> list[str]:
    """Open a copy of the vault with the agent's own classes and repr what they hold."""
    from agent import config, crypto, handlers, state, stores
    from agent.transport import NO_PEER

    copy = short_tmpdir("ca-copy-")
    try:
        for f in (a.home / "data" / "credential-agent").iterdir():
            shutil.copy2(f, copy / f.name)
        body = frame({"v": 1, "op": "store", "args": {"platform": "leak", "value": canary(40)}})[4:]
        request = protocol.decode_request(body)
        ag = state.Agent(config.Options(socket=copy / "none.sock", vault=copy / "vault.sqlite3"))
        try:
            asyncio.run(ag.unlock(PASSPHRASE))
            assert ag.entries[("leak", "api-key")].value == canary(1)  # really unlocked, really holding it
            rows = ag.store.rows()
            key = crypto.generate_key()
            status = handlers.op_status(ag, {}, NO_PEER)
            return [repr(request), str(request), repr(ag), repr(rows), repr(ag.store), repr(crypto.SecureStorage(key)),
                    repr(stores.Row("p", "t", b"x", b"y", 0.0, 0.0, None)), repr(ag.entries), repr(status),
                    repr(ag.source()), repr(ag.meta)]
        finally:
            ag.close()
    finally:
        shutil.rmtree(copy, ignore_errors=True)
