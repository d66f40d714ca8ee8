"""Whether a remote's ``mount`` is what the agent needs: a KV version 2 engine mounted at
exactly that path. A KV v1 mount, another engine or a missing mount otherwise looks
like an empty team vault (a listing of nothing) and takes writes at stray paths.

Rules of this module:
- the mount is asked of ``sys/internal/ui/mounts/MOUNT``, which a policy-limited token
  may read for a mount it has any capability under (``sys/mounts`` needs more);
- it is checked at login (before the token is kept), at every ``agent remote sync``,
  before the first read, listing or write after an unlock, and again when a listing
  finds nothing; a wrong mount is a ``ConfigError`` naming the remote and the mount,
  and nothing is read or written;
- a 403 there is "no such mount, or nothing this token may do under it" unless the
  token itself is refused: that is asked (``lookup-self``) so a revoked token is
  reported as one.
"""

from __future__ import annotations

import logging

from agent.remotes import Mount, RemoteOptions
from agent.remotes.remote import Remote
from client import errors

__all__ = ["ensure", "check", "problem"]

log = logging.getLogger("agent.remotes")


async def ensure(r: Remote, token: str, epoch: int) -> None:
    """Check the mount unless it was checked since the last unlock, login or empty listing."""
    if not r.mount_ok:
        await check(r, token, epoch)


async def check(r: Remote, token: str, epoch: int) -> None:
    if not r.nodes.has_mount:  # a kind with no mounts (AWS Secrets Manager): nothing to check
        r.mount_ok = True
        return
    mount = await r.call(epoch, lambda d: r.nodes.mount(token, d))
    if mount is None:  # the token itself refused? then that is what to say (RemoteDenied)
        await r.call(epoch, lambda d: r.nodes.lookup_self(token, d))
    why = problem(r.options, mount)
    if why is not None:
        raise errors.ConfigError(why)
    if mount is not None and not mount.kind:
        log.info("remote %s: the node cannot say what is mounted at %r; taken to be KV v2", r.name, r.options.mount)
    if r.epoch == epoch:
        r.mount_ok = True


def problem(options: RemoteOptions, mount: Mount | None) -> str | None:
    """What is wrong with the mount found at ``options.mount``, in one line; None if nothing."""
    name, where = options.name, options.mount
    head = f"remote {name!r}: [remote.{name}] mount = {where!r}"
    if mount is None:
        return (
            f"{head}: no such mount that this token can see (it does not exist, or the token's policy grants "
            "nothing under it); nothing was read or written"
        )
    if not mount.kind:
        return None
    actual = mount.path.rstrip("/")
    if mount.kind == "kv" and actual != where and where.startswith(actual + "/"):
        prefix = "/".join(p for p in (where[len(actual) + 1 :], options.prefix) if p)
        return f'{head} is a folder inside the mount {actual!r}: set mount = "{actual}" and prefix = "{prefix}"'
    if mount.kind != "kv":
        return f"{head} is a {mount.kind} engine, not KV version 2; nothing was read or written"
    if mount.version != "2":
        return (
            f"{head} is KV version {mount.version or 1}, and the team vault needs version 2 "
            f"(`bao kv enable-versioning {where}` upgrades it); nothing was read or written"
        )
    return None
