"""How fast a copied passphrase vault can be guessed offline, against the agent online,
and how fast a backup file (`agent backup`) can be, beside the vault.

Offline: anyone who can read the vault file (the same uid, a backup) runs the KDF
of the vault's own parameters as fast as their CPUs go, with no delay; this
measures that on one core of this machine. Online: the agent adds 0.1 s per
consecutive failure, up to 10 s, kept in the vault across restarts; the figure is
the bound that delay puts on guesses per second after many failures. Backup: a
sealed backup file opened with wrong passphrases, each a whole try (scrypt at the
backup's parameters, then the header's MAC), as a ratio to the vault's guess in the
same run.

    python benchmarks/kdf_guess_rate.py [TRIES]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agent import backup, crypto
from agent.keys import passphrase
from client import errors


def main() -> None:
    tries = int(sys.argv[1]) if len(sys.argv) > 1 else 8
    params, wrapped = crypto.wrap_key(crypto.generate_key(), "the real passphrase")
    times = []
    for i in range(tries):
        t0 = time.perf_counter()
        try:
            crypto.unwrap_key(wrapped, f"guess {i}", params)
        except errors.BadPassphrase:
            pass
        times.append(time.perf_counter() - t0)
    per_guess = statistics.median(times)
    cores = os.cpu_count() or 1
    online = 1 / (per_guess + passphrase.FAIL_DELAY_MAX)
    print(f"scrypt n=2^{params.n.bit_length() - 1} r={params.r} p={params.p}: {per_guess * 1000:.0f} ms per guess "
          f"(median of {tries})")
    print(f"offline, a copied vault: {1 / per_guess:.2f} guesses/s per core, {cores / per_guess:.2f} on all "
          f"{cores} cores here")
    print(f"online, through the agent after {int(passphrase.FAIL_DELAY_MAX / passphrase.FAIL_DELAY_STEP)} failures "
          f"(restarts included): at most {online:.3f} guesses/s ({1 / per_guess / online:.0f}x fewer than one core "
          "offline)")
    sealed = backup.parse(backup.seal(backup.pack([], "bench", 0.0), "the real passphrase").encode())
    backup_times = []
    for i in range(tries):
        t0 = time.perf_counter()
        try:
            backup.open_sealed(sealed, f"guess {i}")
        except backup.BackupError:
            pass
        backup_times.append(time.perf_counter() - t0)
    per_backup = statistics.median(backup_times)
    print(f"a backup file, {backup.describe_cost(sealed.params)}: {per_backup * 1000:.0f} ms per guess, "
          f"{1 / per_backup:.2f} guesses/s per core ({per_backup / per_guess:.1f}x the vault's cost per guess)")
    words = 7776**5  # a five-word diceware passphrase
    print(f"a five-word diceware passphrase ({words:.2e} choices) takes {words * per_guess / 2 / cores / 3.15e7:.1e} "
          f"years on average at the offline rate of this machine")


if __name__ == "__main__":
    main()
