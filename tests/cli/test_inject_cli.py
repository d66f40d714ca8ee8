"""`agent inject`: a config file rendered from a template of agent:// references, against
a real agent: values filled in one round trip, the output 0600 and never written
through a symlink or over a file without --force, nothing written when a reference fails."""

from __future__ import annotations

import os
import stat

import pytest

from support import AgentProcess

HF = "hf_" + "InjectCanary" * 3
RP = "rp_" + "r" * 30
TEMPLATE = "hub:\n  token: {{ agent://huggingface }}\npod: {{agent://runpod/api-secret}}\nplain: {{ not a ref }}\n"


@pytest.fixture
def filled(unlocked_agent: AgentProcess) -> AgentProcess:
    with unlocked_agent.client() as c:
        c.store("huggingface", HF)
        c.store("runpod", RP, "api-secret", validate=False)
    return unlocked_agent


def test_a_template_is_rendered_to_a_private_file(filled: AgentProcess) -> None:
    a = filled
    template, out = a.home / "config.yaml.tpl", a.home / "config.yaml"
    template.write_text(TEMPLATE)
    done = a.cli("inject", "-i", str(template), "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_text() == f"hub:\n  token: {HF}\npod: {RP}\nplain: {{{{ not a ref }}}}\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert "2 references filled" in done.stderr and HF not in done.stderr + done.stdout
    to_stdout = a.cli("inject", "-i", "-", "-o", "-", input="x={{ agent://huggingface }}\n")
    assert to_stdout.returncode == 0 and to_stdout.stdout == f"x={HF}\n"


def test_no_overwrite_without_force_and_never_through_a_symlink(filled: AgentProcess) -> None:
    a = filled
    template, out, target = a.home / "t.tpl", a.home / "out.env", a.home / "precious"
    template.write_text("HF={{ agent://huggingface }}\n")
    out.write_text("kept\n")
    kept = a.cli("inject", "-i", str(template), "-o", str(out))
    assert kept.returncode == 1 and "already exists; nothing was written (--force" in kept.stderr
    assert out.read_text() == "kept\n"
    out.unlink()
    target.write_text("not to be touched\n")
    os.symlink(target, out)
    linked = a.cli("inject", "-i", str(template), "-o", str(out))
    assert linked.returncode == 1 and target.read_text() == "not to be touched\n"
    forced = a.cli("inject", "-i", str(template), "-o", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not out.is_symlink() and out.read_text() == f"HF={HF}\n"
    assert target.read_text() == "not to be touched\n"


def test_a_missing_or_malformed_reference_writes_nothing(filled: AgentProcess) -> None:
    a = filled
    template, out = a.home / "t.tpl", a.home / "out.env"
    template.write_text("A={{ agent://huggingface }}\nB={{ agent://openai }}\n")
    missing = a.cli("inject", "-i", str(template), "-o", str(out))
    assert missing.returncode == 1 and "no credential openai/api-key" in missing.stderr
    assert "nothing was written" in missing.stderr and not out.exists()
    template.write_text("A=1\nB={{ agent://bad name/x }}\n")
    bad = a.cli("inject", "-i", str(template), "-o", str(out))
    assert bad.returncode == 1 and ", line 2:" in bad.stderr and not out.exists()
    template.write_text("nothing to fill\n")
    empty = a.cli("inject", "-i", str(template), "-o", str(out))
    assert empty.returncode == 1 and "holds no" in empty.stderr and not out.exists()
