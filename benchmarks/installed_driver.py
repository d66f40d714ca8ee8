#!/usr/bin/env python3
"""Run by benchmarks/run.py with the interpreter of a plain ``pip install`` (``python -I``,
so the ``client`` imported is the installed one): sequential cached gets against the
agent that ``agent start`` started, interleaved in blocks with ssh-agent's round trip.

    python -I installed_driver.py SSH_SOCKET BLOCKS CALLS_PER_BLOCK   -> JSON on stdout
"""

from __future__ import annotations

import json
import socket
import sys
import time

from client import Client

SSH_REQUEST = b"\x00\x00\x00\x01\x0b"  # SSH_AGENTC_REQUEST_IDENTITIES


def ssh_block(sock: socket.socket, n: int) -> list[int]:
    clock, send, recv = time.perf_counter_ns, sock.sendall, sock.recv
    out = []
    for _ in range(n):
        t0 = clock()
        send(SSH_REQUEST)
        data = recv(65536)
        while len(data) < 4 or len(data) < 4 + int.from_bytes(data[:4], "big"):
            data += recv(65536)
        out.append(clock() - t0)
    return out


def agent_block(c: Client, n: int) -> list[int]:
    clock, get = time.perf_counter_ns, c.get
    out = []
    for _ in range(n):
        t0 = clock()
        get("bench0")
        out.append(clock() - t0)
    return out


def main() -> int:
    ssh_path, blocks, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    ssh = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    ssh.connect(ssh_path)
    with Client(autostart=False, timeout=30) as c:
        status = c.status()
        agent_block(c, 500)
        ssh_block(ssh, 500)
        result: list[tuple[list[int], list[int]]] = []
        for i in range(blocks):
            if i % 2:
                b = ssh_block(ssh, n)
                a = agent_block(c, n)
            else:
                a = agent_block(c, n)
                b = ssh_block(ssh, n)
            result.append((a, b))
    ssh.close()
    json.dump({"pid": status["pid"], "loop": status["loop"], "blocks": result}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
