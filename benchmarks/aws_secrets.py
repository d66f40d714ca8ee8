"""An AWS Secrets Manager remote, side by side in one run (not a test): a cached read of an
AWS-backed key through the agent, against boto3's ``get_secret_value`` per call on the same
server, against a local ``get``; short interleaved blocks, medians of the per-block means.

The server is moto's standalone server on loopback (an emulator of the Secrets Manager API,
not AWS: a real region answers from tens of milliseconds away, so the ratio there is larger).

    .venv-test/bin/python benchmarks/aws_secrets.py [--quick]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

from support.aws import Moto, start_aws_agent  # noqa: E402

KEY = "sk-" + "a" * 40


def block_us(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    quick = "--quick" in sys.argv
    moto = Moto().start()
    a = None
    try:
        key = moto.member()
        sm = moto.client("secretsmanager", key)
        sm.create_secret(Name="ml-team/openai", SecretString=KEY)
        a = start_aws_agent(moto.url, key, refresh=3600)
        with a.client() as c:
            c.store("runpod", "r" * 25)
            assert c.get("openai") == KEY

            def direct() -> None:
                assert sm.get_secret_value(SecretId="ml-team/openai")["SecretString"] == KEY

            rows: dict[str, list[float]] = {"agent": [], "boto3": [], "local": []}
            blocks, n = (5, 100) if quick else (15, 300)
            for i in range(blocks):
                order = [("agent", lambda: c.get("openai")), ("boto3", direct), ("local", lambda: c.get("runpod"))]
                for name, fn in order if i % 2 == 0 else order[::-1]:
                    rows[name].append(block_us(fn, n if name != "boto3" else n // 5))
            calls = c.remote_status()[0]["calls"]
        agent_us, boto_us, local_us = (statistics.median(rows[k]) for k in ("agent", "boto3", "local"))
        ratio = statistics.median(b / t for b, t in zip(rows["boto3"], rows["agent"], strict=True))
        print("an AWS Secrets Manager key, read (moto's server on loopback; medians of per-block means)")
        print(f"  cached get through the agent      {agent_us:8.1f} us")
        print(f"  boto3 get_secret_value per call   {boto_us:8.1f} us  ({ratio:.1f}x the agent's)")
        print(f"  local get (baseline)              {local_us:8.1f} us  (agent's AWS read / local: "
              f"{agent_us / local_us:.2f}x)")
        print(f"  requests the agent sent to the server meanwhile: {calls} (the lookup at unlock, the first read)")
        print(f"\nmeasured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    finally:
        if a is not None:
            a.cleanup()
        moto.stop()


if __name__ == "__main__":
    main()
