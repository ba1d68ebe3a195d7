"""Configuration: file < environment < flags, and errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumer.config import ConfigError, load_settings

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_matches_the_defaults() -> None:
    from_file = load_settings(ROOT / "config" / "consumer.toml")
    defaults = load_settings()
    assert from_file.model_dump() == defaults.model_dump()


def test_flags_beat_environment_beat_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text('group_id = "from-file"\nreply_topic = "file-acks"\ndlq_topic = "file-dlq"\n'
                      '[wal]\nbatch_size = 100\n')
    monkeypatch.setenv("TIDAL_GROUP_ID", "from-env")
    monkeypatch.setenv("TIDAL_REPLY_TOPIC", "env-acks")
    monkeypatch.setenv("TIDAL_WAL__BATCH_TIMEOUT", "0.5")
    settings = load_settings(config, group_id="from-flag")
    assert settings.group_id == "from-flag"
    assert settings.reply_topic == "env-acks"
    assert settings.dlq_topic == "file-dlq"
    assert (settings.wal.batch_size, settings.wal.batch_timeout) == (100, 0.5)


@pytest.mark.parametrize("toml,field", [
    ("max_poll_records = 0", "max_poll_records"),
    ("[wal]\nsegment_size = 0", "wal.segment_size"),
    ("[wal]\ndedup_window = inf", "wal.dedup_window"),
    ("unknown_option = 1", "unknown_option"),
    ("[kafka]\nenable_auto_commit = true", "enable_auto_commit"),
    ('[[signals]]\nname = "view"\nid = 1\nhalf_life_seconds = -1\nwindows_seconds = [1]', "half_life_seconds"),
    ('[[signals]]\nname = "a"\nid = 1\nhalf_life_seconds = 1\nwindows_seconds = [1]\n'
     '[[signals]]\nname = "b"\nid = 1\nhalf_life_seconds = 1\nwindows_seconds = [1]', "duplicate id"),
])
def test_bad_config_names_the_field(tmp_path: Path, toml: str, field: str) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(toml)
    with pytest.raises(ConfigError, match=field):
        load_settings(config)


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")
