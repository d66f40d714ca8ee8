"""What root can still find in an agent's memory right after `agent lock` (run as root).

Starts a real agent (passphrase vault), stores and reads five canary values, locks,
unlocks, reads them again, locks, then reads every readable mapping of the agent
through /proc/PID/mem and counts each canary and the passphrase. The agent no longer
references any of them (tests/system/test_attacks.py checks that); what is counted here is
freed memory not yet reused, which Python does not overwrite.

    sudo .venv/bin/python benchmarks/memory_after_lock.py
"""

from __future__ import annotations

import re
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from support import AgentProcess  # noqa: E402


def count(pid: int, needles: list[bytes]) -> dict[bytes, int]:
    counts = dict.fromkeys(needles, 0)
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            m = re.match(r"([0-9a-f]+)-([0-9a-f]+) (\S+)", line)
            if m is None or "r" not in m[3] or "[vvar]" in line or "[vsyscall]" in line:
                continue
            try:
                mem.seek(int(m[1], 16))
                data = mem.read(int(m[2], 16) - int(m[1], 16))
            except OSError:
                continue
            for n in needles:
                counts[n] += data.count(n)
    return counts


def main() -> None:
    mark = "cnry" + secrets.token_hex(8)
    passphrase = f"pw-{mark}-passphrase"
    values = [f"{mark}v{i:02d}" + "k" * 30 for i in range(5)]
    a = AgentProcess().start()
    try:
        with a.client(timeout=60) as c:
            c.init("passphrase", passphrase)
            for i, v in enumerate(values):
                c.store(f"p{i}", v, validate=False)
            c.lock()
            c.unlock(passphrase)
            for i in range(len(values)):
                c.get(f"p{i}")
            c.lock()
            time.sleep(0.5)
            found = count(a.pid, [v.encode() for v in values] + [passphrase.encode()])
        print("copies of each value after lock:", [found[v.encode()] for v in values])
        print("copies of the passphrase after lock:", found[passphrase.encode()])
    finally:
        a.cleanup()


if __name__ == "__main__":
    main()
