"""Reading migration sources: pure functions, no agent, no sockets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from client import migrate
from client.migrate import Record, SourceError

HF = "hf_" + "h" * 30
WB = "w" * 40


def from_json(data: object) -> list[Record]:
    return migrate.records_from_json(data, "test.json")


def by_name(records: list[Record]) -> dict[str, Record]:
    return {r.name: r for r in records}


# --- JSON shapes ---------------------------------------------------------------------
def test_flat_object() -> None:
    (r,) = from_json({"huggingface": HF})
    assert (r.name, r.platform, r.credential_type, r.value, r.error, r.skip) == (
        "huggingface", "huggingface", "api-key", HF, None, None)


@pytest.mark.parametrize("key", migrate.VALUE_KEYS)
def test_record_value_keys(key: str) -> None:
    (r,) = from_json({"wandb": {key: WB, "metadata": {"team": "ml"}, "credential_type": "login"}})
    assert r.value == WB and r.metadata == {"team": "ml"} and r.credential_type == "login" and r.error is None


def test_list_of_records() -> None:
    records = from_json([{"platform": "wandb", "api_key": WB}, {"platform": "huggingface", "token": HF,
                                                                  "credential_type": "read"}])
    assert [(r.name, r.platform, r.credential_type, r.value) for r in records] == [
        ("wandb", "wandb", "api-key", WB), ("huggingface", "huggingface", "read", HF)]


def test_export_shape_reads_back() -> None:
    records = by_name(from_json({
        "runpod:token": {"platform": "runpod", "credential_type": "token", "value": "r" * 30,
                         "metadata": {"a": "b"}, "expires_at": "2031-01-01T00:00:00+00:00"},
        "wandb": {"credential_type": "api-key", "metadata": {}, "expires_at": None},
    }))
    r = records["runpod:token"]
    assert (r.platform, r.credential_type, r.value, r.metadata) == ("runpod", "token", "r" * 30, {"a": "b"})
    assert r.expires_at == 1924992000.0
    assert records["wandb"].skip and "no value" in records["wandb"].skip  # exported without values


def test_same_value_under_two_keys_is_fine() -> None:
    (r,) = from_json({"huggingface": {"api_key": HF, "token": HF}})
    assert r.value == HF and r.error is None


@pytest.mark.parametrize(("data", "name", "field", "words"), [
    ({"huggingface": None}, "huggingface", "skip", "null"),
    ({"huggingface": ""}, "huggingface", "skip", "empty"),
    ({"huggingface": {"api_key": ""}}, "huggingface", "skip", "empty"),
    ({"huggingface": {"metadata": {}}}, "huggingface", "skip", "expected one of api_key"),
    ({"huggingface": 12}, "huggingface", "error", "string or an object"),
    ({"huggingface": [HF]}, "huggingface", "error", "string or an object"),
    ({"huggingface": {"api_key": 12}}, "huggingface", "error", '"api_key" must be a string'),
    ({"huggingface": {"api_key": HF, "token": HF + "x"}}, "huggingface", "error", "several different values"),
    ({"huggingface": {"api_key": HF, "metadata": "x"}}, "huggingface", "error", '"metadata" must be an object'),
    ({"huggingface": {"api_key": HF, "expires_at": "soon"}}, "huggingface", "error", "expires_at"),
    ({"huggingface": {"api_key": HF, "expires_at": True}}, "huggingface", "error", "expires_at"),
    ({"huggingface": {"api_key": HF, "credential_type": "a b"}}, "huggingface", "error", "credential type name"),
    ({"hf:read": {"api_key": HF, "credential_type": "write"}}, "hf:read", "error", "differs"),
    ({"bad name": HF}, "entry 1", "error", "invalid platform name"),
    ({"": HF}, "entry 1", "error", "invalid platform name"),
    ({"hf:": HF}, "entry 1", "error", "invalid credential type name"),
    ([{"api_key": HF}], "record 1", "error", 'no "platform" field'),
    ([{"platform": 3, "api_key": HF}], "record 1", "error", "must be a string"),
    ([HF], "record 1", "error", "must be an object"),
])
def test_bad_records(data: object, name: str, field: str, words: str) -> None:
    (r,) = from_json(data)
    assert r.name == name
    assert words in (getattr(r, field) or ""), r
    assert r.value is None or field == "skip"
    assert HF not in repr(r) and HF not in (r.error or "") + (r.skip or "")


def test_one_bad_record_leaves_the_others() -> None:
    records = from_json({"a": 1, "wandb": WB, "b c": "x", "huggingface": {"token": HF}})
    assert [r.value for r in records] == [None, WB, None, HF]


@pytest.mark.parametrize("data", ["a string", 12, None, True])
def test_top_level_must_be_object_or_list(data: object) -> None:
    with pytest.raises(SourceError, match="nothing was imported"):
        from_json(data)


@pytest.mark.parametrize(("text", "line", "col"), [
    ('{"huggingface": "hf_x",}', 1, 24),
    ('{\n  "wandb": "' + WB + '",\n  "runpod": "rrrrr\n}', 3, 19),
    ('{"a": "b"}\n{"c": "d"}', 2, 1),
    ("[\n\n  {'platform': 'x'}]", 3, 4),
    ('{"a": "b"', 1, 10),
])
def test_malformed_json_names_line_and_column(text: str, line: int, col: int) -> None:
    with pytest.raises(SourceError) as e:
        migrate.parse_json(text, "creds.json")
    assert f"line {line}, column {col}" in e.value.message
    assert "nothing was imported" in e.value.message
    assert WB not in e.value.message and "rrrrr" not in e.value.message


def test_deep_nesting_is_refused() -> None:
    with pytest.raises(SourceError, match="nested too deeply"):
        migrate.parse_json("[" * 100_000 + "]" * 100_000, "deep.json")


def test_record_repr_hides_the_value() -> None:
    r = Record("huggingface", "huggingface", value=HF)
    assert HF not in repr(r) and HF not in str(r)


# --- files --------------------------------------------------------------------------
def test_read_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"cannot read .*No such file"):
        migrate.read_source(tmp_path / "missing.json")
    with pytest.raises(SourceError, match=r"cannot read .*Is a directory"):
        migrate.read_source(tmp_path)
    (tmp_path / "empty.json").write_text("  \n")
    with pytest.raises(SourceError, match="is empty"):
        migrate.read_source(tmp_path / "empty.json")
    (tmp_path / "latin1.json").write_bytes(b'{"a": "caf\xe9"}')
    with pytest.raises(SourceError, match=r"not UTF-8 text .*offset 10"):
        migrate.read_source(tmp_path / "latin1.json")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(migrate.MAX_SOURCE + 1)
    with pytest.raises(SourceError, match="larger than"):
        migrate.read_source(big)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_read_source_unreadable(tmp_path: Path) -> None:
    f = tmp_path / "creds.json"
    f.write_text("{}")
    f.chmod(0)
    with pytest.raises(SourceError, match=r"cannot read .*Permission denied"):
        migrate.read_source(f)


def test_read_source_strips_a_bom(tmp_path: Path) -> None:
    f = tmp_path / "bom.json"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"wandb": WB}).encode())
    assert migrate.parse_json(migrate.read_source(f), "bom.json") == {"wandb": WB}


# --- .env ---------------------------------------------------------------------------
DOTENV = f"""# keys
HF_TOKEN={HF}
export WANDB_API_KEY = '{WB}'   # inline comment
RUNPOD_API_KEY="rp_{"r" * 20}" # trailing
EMPTY=
UNQUOTED=a b # comment
HASH=a#b
ESCAPED="line1\\nline2 \\"q\\""
MULTI="first
second"
AFTER=1
"""


def test_parse_dotenv() -> None:
    got = {name: (value, line) for name, value, line in migrate.parse_dotenv(DOTENV, ".env")}
    assert got["HF_TOKEN"] == (HF, 2)
    assert got["WANDB_API_KEY"] == (WB, 3)
    assert got["RUNPOD_API_KEY"] == ("rp_" + "r" * 20, 4)
    assert got["EMPTY"] == ("", 5)
    assert got["UNQUOTED"] == ("a b", 6)
    assert got["HASH"] == ("a#b", 7)
    assert got["ESCAPED"] == ('line1\nline2 "q"', 8)
    assert got["MULTI"] == ("first\nsecond", 9)
    assert got["AFTER"] == ("1", 11)


def test_parse_dotenv_crlf() -> None:
    assert migrate.parse_dotenv(f"A=1\r\nHF_TOKEN={HF}\r\n", ".env") == [("A", "1", 1), ("HF_TOKEN", HF, 2)]


@pytest.mark.parametrize(("text", "line", "words"), [
    (f"A=1\n{HF}\n", 2, "expected NAME=VALUE"),
    (f"A=1\n\nHF_TOKEN {HF}\n", 3, "expected NAME=VALUE"),
    ("A=1\n1BAD=x\n", 2, "expected NAME=VALUE"),
    (f'A=1\nHF_TOKEN="{HF}\nB=2\n', 2, "never closed"),
    (f"HF_TOKEN='{HF}", 1, "never closed"),
    (f'HF_TOKEN="{HF}" trailing\n', 1, "after the closing quote"),
])
def test_malformed_dotenv_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SourceError) as e:
        migrate.parse_dotenv(text, ".env")
    assert f"line {line}" in e.value.message and words in e.value.message
    assert "nothing was imported" in e.value.message
    assert HF not in e.value.message


def test_dotenv_records_map_known_names() -> None:
    assignments = migrate.parse_dotenv(
        f"HUGGING_FACE_HUB_TOKEN=hf_old{'o' * 20}\nHF_TOKEN={HF}\nWANDB_API_KEY=\nDATABASE_URL=x\nMY_KEY=abc\n",
        ".env")
    records = migrate.records_from_dotenv(assignments, {"MY_KEY": "mine"}, "/p/.env")
    got = {(r.name, r.origin): r for r in records}
    mine = got[("mine", "MY_KEY (line 5)")]
    assert mine.value == "abc" and mine.metadata == {"source": "dotenv:/p/.env:MY_KEY"}
    hf = got[("huggingface", "HF_TOKEN (line 2)")]
    assert hf.value == HF  # HF_TOKEN is preferred over the older name
    assert "already comes from HF_TOKEN" in (got[("huggingface", "HUGGING_FACE_HUB_TOKEN (line 1)")].skip or "")
    assert "WANDB_API_KEY is empty" in (got[("wandb", "WANDB_API_KEY (line 3)")].skip or "")
    assert "--map DATABASE_URL=PLATFORM" in (got[("DATABASE_URL", "line 4")].skip or "")
    assert len(records) == 5


def test_dotenv_explicit_map_of_a_missing_variable_fails() -> None:
    records = migrate.records_from_dotenv([("A", "1", 1)], {"NOT_THERE": "x"}, "/p/.env")
    assert [(r.name, r.error) for r in records if r.error] == [("x", "NOT_THERE is not set")]


# --- environment ----------------------------------------------------------------------
def test_env_records() -> None:
    environ = {"HF_TOKEN": HF, "EMPTY": "", "huggingface": "x"}
    records = migrate.records_from_env(environ, [("hf", "HF_TOKEN"), ("w", "EMPTY"), ("r", "NOPE"),
                                                 ("HF_TOKEN", "huggingface"), ("a b", "HF_TOKEN")])
    assert records[0].value == HF and records[0].metadata == {"source": "env:HF_TOKEN"}
    assert records[1].error == "EMPTY is empty"
    assert records[2].error == "NOPE is not set"
    assert records[3].value == "x"
    assert records[4].error is not None and "invalid platform name" in records[4].error
    (hint,) = migrate.records_from_env({"HF_TOKEN": HF}, [("HF_TOKEN", "huggingface")])
    assert hint.error == "huggingface is not set (did you mean huggingface=HF_TOKEN?)"


def test_env_records_known_variables() -> None:
    records = migrate.records_from_env({"WANDB_API_KEY": WB, "PATH": "/bin", "HF_TOKEN": HF})
    assert sorted((r.platform, r.value) for r in records) == [("huggingface", HF), ("wandb", WB)]


def test_variable_for() -> None:
    assert migrate.variable_for("huggingface") == "HF_TOKEN"
    assert migrate.variable_for("hf") == "HF_TOKEN"
    assert migrate.variable_for("wandb") == "WANDB_API_KEY"
    assert migrate.variable_for("runpod") == "RUNPOD_API_KEY"
    assert migrate.variable_for("lambda") == "LAMBDA_API_KEY"
    assert migrate.variable_for("vastai") == "VAST_API_KEY"
    assert migrate.variable_for("my-service") == "MY_SERVICE_API_KEY"
    assert migrate.variable_for("runpod", "api-secret") == "RUNPOD_API_SECRET"
    assert migrate.variable_for("huggingface", "read") == "HUGGINGFACE_READ"
    assert migrate.variable_for("wandb", "api-key") == "WANDB_API_KEY"


# --- fuzz: any input ends in records or a SourceError, never another exception ----------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(json_values)
def test_fuzz_json_records(data: object) -> None:
    try:
        records = from_json(data)
    except SourceError:
        return
    for r in records:
        assert (r.value is None) or (r.error is None and r.skip is None)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("AB_=#'\"\\ \n\rx9ex")), max_size=60))
def test_fuzz_dotenv(text: str) -> None:
    try:
        migrate.parse_dotenv(text, ".env")
    except SourceError as e:
        assert "line " in e.message
