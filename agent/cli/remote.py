"""``agent remote login | status | sync``: the team vaults named in the config file.

The token (or an AppRole's role and secret ids, or a JWT) is read like any secret: a
hidden prompt, or the first lines of stdin; never argv (a role id may still be given
there). A JWT may also come from an environment variable (read here: the agent's own
environment is not the caller's) or a file the agent reads again at each login. The
agent checks it against the remote and keeps it sealed in the local vault. A remote with
``auth = "cert"`` is given nothing: ``--cert`` has the agent log in with the client
certificate its config names now (it also does so by itself)."""

from __future__ import annotations

import argparse
import os

from agent.cli._common import (
    CliError,
    Exit,
    Subcommands,
    add_command,
    add_group,
    name_arg,
    print_json,
    read_secret,
    shown,
)
from client import Client, config

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["register"]


def cmd_login(args: argparse.Namespace) -> int:
    if args.jwt is None and (args.jwt_file is not None or args.jwt_env is not None):
        raise CliError("--jwt-file and --jwt-env go with --jwt ROLE")
    if args.cert:
        if args.approle is not None or args.jwt is not None:
            raise CliError("--cert is a login of its own: no --approle or --jwt with it")
        with Client() as c:
            result = c.remote_login(args.remote)
    elif args.approle is not None:
        # the role id as the secret id: a prompt or stdin (an argument would show in the process list)
        role_id = args.approle or read_secret(f"AppRole role id for {args.remote}: ")
        secret_id = read_secret(f"AppRole secret id for {args.remote}: ")
        with Client() as c:
            result = c.remote_login(args.remote, role_id=role_id, secret_id=secret_id)
    elif args.jwt is not None:
        result = _jwt_login(args)
    else:
        token = read_secret(f"Token for {args.remote}: ")
        with Client() as c:
            result = c.remote_login(args.remote, token)
    ttl = "never expires" if not result["ttl_s"] else f"TTL {config.format_duration(result['ttl_s'])}"
    renew = ", renewed by the agent" if result["renewable"] else ""
    print(f"logged in to {args.remote} ({ttl}{renew}; policies: {shown(', '.join(result['policies'])) or '-'})")
    return Exit.OK


def _jwt_login(args: argparse.Namespace) -> dict[str, Any]:
    """``--jwt ROLE``: the JWT from ``--jwt-file`` (its absolute path goes to the agent, which
    reads it again at each login), ``--jwt-env`` (read here), or a prompt or stdin."""
    if args.jwt_file is not None and args.jwt_env is not None:
        raise CliError("give --jwt-file or --jwt-env, not both")
    if args.jwt_file is not None:
        with Client() as c:
            return dict(c.remote_login(args.remote, jwt_role=args.jwt, jwt_file=os.path.abspath(args.jwt_file)))
    if args.jwt_env is not None:
        jwt = os.environ.get(args.jwt_env, "")
        if not jwt:
            raise CliError(f"the environment variable {args.jwt_env} is not set or empty")
    else:
        jwt = read_secret(f"JWT for role {args.jwt} of {args.remote}: ")
    with Client() as c:
        return dict(c.remote_login(args.remote, jwt_role=args.jwt, jwt=jwt))


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return config.format_duration(seconds)


def _print_status(rows: list[dict[str, Any]]) -> None:
    if not rows:
        print("no remotes in the config file ([remote.NAME] tables)")
        return
    print(f"{'REMOTE':<12} {'REACHABLE':<10} {'LAST NODE':<28} {'CACHE AGE':<10} {'CACHED':<7} TOKEN")
    for r in rows:
        reachable = "-" if r["reachable"] is None else "yes" if r["reachable"] else "NO"
        if r.get("kind", "openbao") != "openbao":  # credentials from the library's own chain (boto3's)
            held = "boto3's credential chain" if r["logged_in"] else "credential chain (locked)"
        elif not r["logged_in"]:
            held = "stored (locked)" if r["token_stored"] else "none: `agent remote login`"
            held = "client certificate: no token yet" if r.get("auth") == "cert" and not r["token_stored"] else held
        elif r["token_never_expires"]:
            held = "never expires"
        else:
            held = f"TTL {_age(r['token_ttl_s'])}, {r['renewals']} renewals"
            if r.get("auth") == "cert":
                held += f", {r['relogins']} certificate logins"
            elif r.get("auth") == "approle":
                held += f", {r['relogins']} AppRole logins"
            elif r.get("auth") == "jwt":
                held += f", {r['relogins']} JWT logins"
        print(
            f"{r['remote']:<12} {reachable:<10} {r['last_node'] or '-':<28} {_age(r['cache_age_s']):<10} "
            f"{r['cached_secrets']:<7} {held}"
        )
        if r["last_error"]:
            print(f"  last error: {shown(r['last_error'])}")
        if r.get("token_denied_s") is not None:  # the TOKEN column is what the agent knew before
            print(f"  {_refused(r['remote'], r['token_denied_s'], r.get('denied_grace'))}")
        if r.get("offline_secrets"):
            print(
                f"  offline cache: {r['offline_secrets']} values served from it (sealed in the vault), confirmed "
                f"by the remote {_age(r['offline_age_s'])} ago at the oldest; served up to max_stale "
                f"({_age(r['max_stale'])})"
            )
        _print_names(r)


def _refused(name: str, ago: float, grace: float | None) -> str:
    """The status line of a token the remote refused itself: how long the cached values go on
    (``grace`` None: an agent that does not report it)."""
    head = f"token refused by the remote {_age(ago)} ago (revoked or expired)"
    if grace is None:
        return f"{head}; `agent remote login {name}`"
    left = grace - ago
    served = f"served {_age(left)} more (denied_grace)" if left > 0 else "no longer served"
    return f"{head}: its cached values are {served}; `agent remote login {name}`"


def _print_names(r: dict[str, Any]) -> None:
    """Upstream names not served as such: collisions, then the names the agent cannot use
    (escaped: whoever may write the mount chose them)."""
    for c in r.get("collisions", ()):
        spellings = ", ".join(shown(repr(s)) for s in c["upstream"])
        served = f"serving {shown(repr(c['served']))}" if c["served"] else "none served"
        print(f"  collision: {spellings} all mean {shown(c['name'])} ({served})")
    count = r.get("unusable_count", 0)
    if count:
        names = "; ".join(f"{shown(repr(u['name']))}: {u['why']}" for u in r["unusable"])
        more = f"; and {count - len(r['unusable'])} more (--json)" if count > len(r["unusable"]) else ""
        print(f"  not served ({count} upstream name{'s' if count != 1 else ''}): {names}{more}")


def cmd_status(args: argparse.Namespace) -> int:
    with Client() as c:
        rows = c.remote_status()
    if args.json:
        print_json(rows)
    else:
        _print_status(rows)
    return Exit.OK


def cmd_sync(args: argparse.Namespace) -> int:
    with Client() as c:
        rows = c.remote_sync(args.remote)
    for r in rows:
        if args.remote is None or r["remote"] == args.remote:
            print(f"synced {r['remote']}: {r['cached_secrets']} secrets from {r['last_node'] or '-'}")
    return Exit.OK


def register(sub: Subcommands) -> None:
    group = add_group(
        sub,
        "remote",
        "team vaults (OpenBao / Vault KV v2) named in the config file",
        dest="remote_command",
        metavar="ACTION",
    )
    p = add_command(group, "login", cmd_login, "give the agent a token for a remote (hidden prompt or stdin)")
    p.add_argument("remote", type=name_arg)
    p.add_argument(
        "--approle",
        nargs="?",
        const="",
        metavar="ROLE_ID",
        help="log in with an AppRole: its role id, then its secret id, from a prompt or stdin's first two lines "
        "(a role id given here shows in the process list)",
    )
    p.add_argument(
        "--jwt",
        metavar="ROLE",
        help="log in as ROLE of OpenBao's jwt auth method (CI jobs: GitLab's id_tokens, GitHub's OIDC token, a "
        "Kubernetes service account), with the JWT from --jwt-file, --jwt-env, or a prompt or stdin's first line; "
        "the agent logs in again with it when its token ends",
    )
    p.add_argument("--jwt-file", metavar="PATH", help="the JWT's file: the agent reads it again at each login")
    p.add_argument("--jwt-env", metavar="VAR", help="the environment variable that holds the JWT (read once, here)")
    p.add_argument(
        "--cert",
        action="store_true",
        help='log in now with the client certificate of the remote\'s table (auth = "cert"), as the agent also '
        "does by itself after each unlock and when its token ends",
    )
    p = add_command(group, "status", cmd_status, "reachable, last node, cache age and token TTL per remote")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = add_command(group, "sync", cmd_sync, "refresh the cache of one remote (or all) now")
    p.add_argument("remote", type=name_arg, nargs="?")
