"""Source files: errors name file, line and key; secrets are references, never literals; all problems at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.sources import load_source, load_sources

ROOT = Path(__file__).resolve().parents[1]
ENV = {
    "EOFFICE_PASSWORD": "x",
    "EDOC_HUB_TOKEN": "x",
    "EDOC_HUB_ORGAN_ID": "x",
    "LGSP_CLIENT_SECRET": "x",
    "VXP_SECRET": "x",
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "src.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_every_shipped_source_file_loads() -> None:
    specs = load_sources(ROOT / "sources", env=ENV)
    assert "eoffice" in specs
    for spec in specs.values():
        assert spec.interval > 0


def test_a_literal_password_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """name: demo
kind: rest
base_url: http://127.0.0.1:1
id_system: ioffice
auth:
  type: basic
  username: kpigw
  password: hunter2
streams: {}
""",
    )
    with pytest.raises(ConfigError) as info:
        load_source(path, env={})
    message = str(info.value)
    assert f"{path}:8:3" in message and "auth.password" in message and "${ENV_VAR}" in message
    assert "hunter2" not in message


def test_unknown_keys_and_missing_env_are_all_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """name: demo
kind: rest
base_url: "${NOT_SET_ANYWHERE}"
id_system: ioffice
auth: {type: none}
streams:
  docs:
    path: /x
    records: data
    key: id
    paginatr: {type: offset}
    normalize: {kind: task, key: "t:{id}", agency: unit}
""",
    )
    with pytest.raises(ConfigError) as info:
        load_source(path, env={})
    assert f"{path}:3:1" in str(info.value) and "NOT_SET_ANYWHERE" in str(info.value)
    path = _write(tmp_path, path.read_text().replace("${NOT_SET_ANYWHERE}", "http://127.0.0.1:1"))
    with pytest.raises(ConfigError) as info:
        load_source(path, env={})
    assert f"{path}:11:5" in str(info.value) and "streams.docs.paginatr: unknown key" in str(info.value)


def test_duplicate_keys_and_unknown_kinds_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: a\nname: b\nkind: rest\n")
    with pytest.raises(ConfigError, match=r"src.yaml:2:1: invalid YAML: duplicate key 'name'"):
        load_source(path, env={})
    path = _write(tmp_path, "name: a\nkind: telepathy\n")
    with pytest.raises(ConfigError, match=r"src.yaml:2:1: kind: unknown connector kind 'telepathy'"):
        load_source(path, env={})


def test_secret_from_a_file_reference(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    path = _write(
        tmp_path,
        f"""name: demo
kind: rest
base_url: http://127.0.0.1:1
id_system: ioffice
auth: {{type: basic, username: u, password: "${{file:{secret}}}"}}
streams: {{}}
""",
    )
    spec = load_source(path, env={})
    assert spec.config.auth.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(spec.config)


def test_schedule_cron_is_validated_at_load(tmp_path: Path) -> None:
    text = """name: demo
kind: rest
base_url: http://127.0.0.1:1
id_system: ioffice
auth: {type: none}
schedule: {cron: "%s"}
streams: {}
"""
    assert load_source(_write(tmp_path, text % "*/5 7-18 * * 1-6"), env={}).cron == "*/5 7-18 * * 1-6"
    with pytest.raises(ConfigError, match=r"src.yaml:6:\d+: schedule.cron: .*not a valid cron expression"):
        load_source(_write(tmp_path, text % "every five minutes"), env={})
