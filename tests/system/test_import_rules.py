"""Layering rules, checked in fresh interpreters (as keyring's test_integration)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from support import ROOT


def loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(json.loads(done.stdout.splitlines()[-1]))


@pytest.mark.parametrize("code", ["import client", "from client import Client, CredentialService",
                                  "import client.protocol, client.errors, client.paths, client.validation"])
def test_client_loads_no_keyring_cryptography_or_asyncio(code: str) -> None:
    mods = loaded_after(code)
    for forbidden in ("keyring", "cryptography", "asyncio", "agent", "hvac", "boto3", "botocore"):
        assert not any(m == forbidden or m.startswith(forbidden + ".") for m in mods), forbidden


def test_async_client_loads_asyncio_only_on_use() -> None:
    mods = loaded_after("from client import AsyncClient")
    assert "asyncio" in mods and "keyring" not in mods and "cryptography" not in mods


def test_protocol_module_does_no_io() -> None:
    source = (ROOT / "client" / "protocol.py").read_text()
    for word in ("import socket", "import asyncio", "open(", "import os"):
        assert word not in source


# keyring: the agent's keystore module, and the client's keyring backend, which only
# keyring itself loads (by name or entry point) and nothing in client/ imports
@pytest.mark.parametrize(("lib", "owners"), [("keyring", ["agent/keys/keystore.py", "client/keyring_backend.py"]),
                                             ("cryptography", ["agent/crypto.py"]),
                                             ("boto3", ["agent/remotes/aws.py"]),
                                             ("botocore", ["agent/remotes/aws.py"])])
def test_one_module_imports_each_foreign_library(lib: str, owners: list[str]) -> None:
    importers = sorted(
        str(p.relative_to(ROOT))
        for d in ("agent", "client")
        for p in (ROOT / d).rglob("*.py")
        if any(line.strip().startswith((f"import {lib}", f"from {lib}")) for line in p.read_text().splitlines())
    )
    assert importers == owners


def test_nothing_imports_the_keyring_backend() -> None:
    for d in ("agent", "client"):
        for p in (ROOT / d).rglob("*.py"):
            assert "keyring_backend" not in p.read_text() or p.name == "keyring_backend.py", p


def test_every_client_module_but_the_backend_loads_no_keyring() -> None:
    names = sorted(p.stem for p in (ROOT / "client").glob("*.py") if p.stem not in ("keyring_backend", "__init__"))
    mods = loaded_after("import " + ", ".join(f"client.{n}" for n in names) + "\nimport client\nclient.credentials_for")
    assert not any(m == "keyring" or m.startswith("keyring.") for m in mods)


def test_client_never_imports_agent() -> None:
    for p in (ROOT / "client").rglob("*.py"):
        for line in p.read_text().splitlines():
            assert not line.strip().startswith(("import agent", "from agent")), p


def test_every_op_has_exactly_one_handler() -> None:
    from agent.handlers import HANDLERS
    from client.protocol import OPS

    assert set(HANDLERS) == set(OPS)


def test_import_client_alone_loads_no_msgpack_typing_or_pathlib() -> None:
    # every connector pays this import; Client (and msgpack) load on first use
    mods = loaded_after("import client") - loaded_after("pass")  # site's .pth files may load some
    for heavy in ("msgpack", "typing", "pathlib", "dataclasses", "tempfile", "socket", "threading"):
        assert heavy not in mods, heavy
    assert "msgpack" in loaded_after("from client import Client")
