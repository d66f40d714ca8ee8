"""A real second Unix user for the tests, and a copy of this checkout it may run.

Created with useradd when the tests run as root (skipped, saying so, otherwise);
its processes start through ``subprocess.Popen(user=..., group=...)`` (setuid in
the child). This interpreter may live in root's private home, so the user gets
a readable copy of the packages and a system interpreter.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import ROOT


def _retry(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """useradd/userdel fail while another process holds /etc/passwd's lock: retry."""
    for _ in range(50):
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0 or "lock" not in done.stderr.lower():
            return done
        time.sleep(0.2)
    return done


@pytest.fixture(scope="module")
def other_user() -> Iterator[pwd.struct_passwd]:
    if os.geteuid() != 0:
        pytest.skip("creating a real second Unix user needs root (useradd); run the suite as root to cover this")
    if shutil.which("useradd") is None:
        pytest.skip("useradd is not installed")
    name = f"caother{os.getpid()}"[:31]
    done = _retry(["useradd", "--no-create-home", "--user-group", "--shell", "/usr/sbin/nologin", name])
    if done.returncode != 0:
        pytest.fail(f"useradd {name} failed: {done.stderr.strip()}")
    try:
        yield pwd.getpwnam(name)
    finally:
        _retry(["userdel", name])


def user_python(user: pwd.struct_passwd) -> str:
    """An interpreter ``user`` may run."""
    for candidate in (os.path.realpath(sys.executable), "/usr/bin/python3", "/usr/local/bin/python3"):
        if not os.path.exists(candidate):
            continue
        try:
            done = subprocess.run([candidate, "-c", "pass"], user=user.pw_uid, group=user.pw_gid, extra_groups=[],
                                  capture_output=True, timeout=30)
        except PermissionError:
            continue
        if done.returncode == 0:
            return candidate
    pytest.skip(f"no Python interpreter that user {user.pw_name} may run")


def readable_copy(*modules: str) -> Path:
    """A world-readable dir holding this checkout's agent/client and the named installed modules."""
    lib = Path(tempfile.mkdtemp(prefix="ca-lib-", dir="/tmp"))
    for pkg in ("agent", "client"):
        shutil.copytree(ROOT / pkg, lib / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    for name in modules:
        mod = __import__(name)
        src = Path(mod.__file__ or "")
        if src.name == "__init__.py":
            shutil.copytree(src.parent, lib / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, lib / src.name)
    for d, _dirs, files in os.walk(lib):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644)
    os.chmod(lib, 0o755)
    return lib
