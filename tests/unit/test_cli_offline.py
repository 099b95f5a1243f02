"""CLI behaviour that needs no broker: configuration display and errors."""

from __future__ import annotations

from click.testing import CliRunner

from stream.cli import main


def test_config_show_masks_secrets_and_applies_precedence(tmp_path):
    cfg = tmp_path / "fs.toml"
    cfg.write_text('group_id = "from-file"\npartitions = 12\n'
                   '[kafka]\n"sasl.password" = "hunter2"\n')
    runner = CliRunner()
    result = runner.invoke(main, ["--config", str(cfg), "config", "show", "--json"],
                           env={"FRAUDSTREAM_PARTITIONS": "24",
                                "FRAUDSTREAM_SASL_PASSWORD": "s3cret"})
    assert result.exit_code == 0, result.output
    assert "hunter2" not in result.output and "s3cret" not in result.output
    assert '"group_id":"from-file"' in result.output
    assert '"partitions":24' in result.output  # env beats file
    assert '"sasl.password":"********"' in result.output


def test_invalid_setting_is_a_usage_error():
    result = CliRunner().invoke(main, ["config", "show"],
                                env={"FRAUDSTREAM_PROCESSING_GUARANTEE": "maybe"})
    assert result.exit_code == 2
    assert "processing_guarantee" in result.output


def test_publish_missing_file_is_reported():
    result = CliRunner().invoke(main, ["publish", "/nonexistent/events.jsonl"])
    assert result.exit_code == 2
    assert "no such file" in result.output
