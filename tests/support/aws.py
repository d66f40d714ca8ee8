"""A real HTTP server that speaks the AWS Secrets Manager, STS and IAM APIs, for tests: moto's
standalone server (``moto[server]``, the ``test`` extra), run as its own process on loopback
and reached by the real boto3 over HTTP. It is an emulator, not AWS.

IAM is enforced (moto's ``INITIAL_NO_AUTH_ACTION_COUNT``): the first three requests make an
admin user, its key and its policy; from then on every request needs a key moto issued, so
a member's key can be deleted (``revoke``) and its requests are refused as AWS refuses them.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from typing import Any

from support import AgentProcess, short_tmpdir
from support.openbao import free_port

REGION = "us-east-1"
MEMBER_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": ["secretsmanager:*", "sts:GetCallerIdentity"], "Resource": "*"}],
    }
)


def moto_available() -> bool:
    try:
        import boto3  # noqa: F401
        import moto.server  # noqa: F401
    except ImportError:
        return False
    return True


class Moto:
    """moto's server on a free loopback port; ``admin`` a key that may do anything."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = short_tmpdir("moto-")
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin: tuple[str, str] = ("", "")
        self.members = 0

    def start(self) -> Moto:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "3"
        with open(self.dir / "moto.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/moto-api/", timeout=1)
                break
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto did not start: {(self.dir / 'moto.log').read_text()[-2000:]}") from None
                time.sleep(0.1)
        iam = self.client("iam", ("unset", "unset"))
        iam.create_user(UserName="admin")
        key = iam.create_access_key(UserName="admin")["AccessKey"]
        self.admin = (key["AccessKeyId"], key["SecretAccessKey"])
        everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(everything))
        return self

    def client(self, service: str, key: tuple[str, str] | None = None) -> Any:
        import boto3

        key = key or self.admin
        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=key[0],
            aws_secret_access_key=key[1],
        )

    def member(self) -> tuple[str, str]:
        """A new IAM user's key, allowed Secrets Manager and STS's GetCallerIdentity."""
        self.members += 1
        name = f"member{self.members}"
        iam = self.client("iam")
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        iam.put_user_policy(UserName=name, PolicyName="secrets", PolicyDocument=MEMBER_POLICY)
        return key["AccessKeyId"], key["SecretAccessKey"]

    def revoke(self, key_id: str) -> None:
        """Delete a member's key: from now on AWS (here moto) refuses every request it signs."""
        iam = self.client("iam")
        for user in iam.list_users()["Users"]:
            keys = iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
            if any(k["AccessKeyId"] == key_id for k in keys):
                iam.delete_access_key(UserName=user["UserName"], AccessKeyId=key_id)
                return
        raise KeyError(key_id)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(10)


def aws_config(name: str, endpoint: str, **options: Any) -> str:
    """A ``[remote.NAME]`` table of kind aws-secrets-manager."""
    lines = [f"[remote.{name}]", 'kind = "aws-secrets-manager"', f'region = "{REGION}"', f'endpoint_url = "{endpoint}"']
    for key, value in options.items():
        lines.append(f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}")
    return "\n".join(lines) + "\n"


def start_aws_agent(endpoint: str, key: tuple[str, str], **options: Any) -> AgentProcess:
    """An agent whose remote ``team`` is Secrets Manager at ``endpoint`` (under the prefix
    ``ml-team`` unless ``options`` say otherwise), its credentials ``key`` in the environment
    (boto3's chain), a passphrase vault made and unlocked."""
    home = short_tmpdir()
    config = home / "config.toml"
    options.setdefault("prefix", "ml-team")
    config.write_text(aws_config("team", endpoint, **options))
    env = {
        "CREDENTIAL_AGENT_CONFIG": str(config),
        "AWS_ACCESS_KEY_ID": key[0],
        "AWS_SECRET_ACCESS_KEY": key[1],
        "AWS_CONFIG_FILE": str(home / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"),
    }
    a = AgentProcess(home=home, env=env).start()
    try:
        a.init_passphrase()
    except BaseException:
        a.cleanup()
        raise
    return a
