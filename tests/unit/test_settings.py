"""Settings: source precedence, librdkafka pass-through, secrets, and precise ConfigErrors.

Every test hands ``Settings.load`` an explicit ``env`` mapping, so none reads or changes
``os.environ``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from stream.exceptions import ConfigError
from stream.settings import Secret, Settings, is_secret_property, redact_client_config

MASK = "********"


def write(tmp_path: Path, text: str, name: str = "fraudstream.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def config_error(*fragments: str, **load: Any) -> ConfigError:
    load.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        Settings.load(**load)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    return info.value


# ---------------------------------------------------------------------- precedence
def test_defaults_when_nothing_is_given() -> None:
    s = Settings.load(env={})
    assert s.partitions == 6
    assert s.processing_guarantee == "exactly_once"
    assert s.max_message_bytes == 64 * 1024
    assert s.topic_dead_letter == "fraudstream.dead-letter"
    assert dict(s.kafka) == {}
    assert s.sasl_password is None


def test_precedence_defaults_file_env_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, 'partitions = 2\nclient_id = "from-file"\ngroup_id = "file-group"\n'
                           'model_name = "file-model"\n')
    env = {"FRAUDSTREAM_PARTITIONS": "3", "FRAUDSTREAM_CLIENT_ID": "from-env",
           "FRAUDSTREAM_GROUP_ID": "env-group"}
    s = Settings.load(path, overrides={"partitions": 4}, env=env)
    assert s.partitions == 4  # overrides beat the environment
    assert s.group_id == "env-group"  # the environment beats the file
    assert s.client_id == "from-env"
    assert s.model_name == "file-model"  # the file beats the defaults
    assert s.commit_interval_ms == 100  # untouched default

    assert Settings.load(path, env=env).partitions == 3
    assert Settings.load(path, env={}).partitions == 2


def test_none_overrides_are_flags_not_given(tmp_path: Path) -> None:
    path = write(tmp_path, "partitions = 2\n")
    s = Settings.load(path, overrides={"partitions": None, "group_id": None}, env={})
    assert (s.partitions, s.group_id) == (2, "fraudstream-worker")


def test_config_file_from_env_and_argument_wins(tmp_path: Path) -> None:
    from_env = write(tmp_path, "partitions = 7\n", "env.toml")
    from_arg = write(tmp_path, "partitions = 8\n", "arg.toml")
    assert Settings.load(env={"FRAUDSTREAM_CONFIG": str(from_env)}).partitions == 7
    assert Settings.load(from_arg, env={"FRAUDSTREAM_CONFIG": str(from_env)}).partitions == 8


def test_env_values_are_coerced_to_field_types() -> None:
    s = Settings.load(env={"FRAUDSTREAM_PARTITIONS": " 12 ",
                           "FRAUDSTREAM_REVIEW_THRESHOLD": "0.25",
                           "FRAUDSTREAM_SASL_USERNAME": "",
                           "FRAUDSTREAM_MAX_MESSAGE_BYTES": "1024"})
    assert (s.partitions, s.review_threshold, s.max_message_bytes) == (12, 0.25, 1024)
    assert s.sasl_username is None  # empty means unset for optional settings


def test_unknown_env_names_are_ignored() -> None:
    env = {"FRAUDSTREAM_NOT_A_SETTING": "x", "FRAUDSTREAM_": "x", "FRAUDSTREAM_KAFKA": "x",
           "PARTITIONS": "9", "fraudstream_partitions": "9", "OTHER_PARTITIONS": "9"}
    s = Settings.load(env=env)
    assert s == Settings.load(env={})
    assert s.partitions == 6 and dict(s.kafka) == {}


# ---------------------------------------------------------------------- librdkafka pass-through
def test_kafka_env_names_become_dotted_properties() -> None:
    s = Settings.load(env={"FRAUDSTREAM_KAFKA__SOCKET_TIMEOUT_MS": "30000",
                           "FRAUDSTREAM_KAFKA__STATISTICS_INTERVAL_MS": "0"})
    assert dict(s.kafka) == {"socket.timeout.ms": "30000", "statistics.interval.ms": "0"}
    assert s.kafka_client_config()["socket.timeout.ms"] == "30000"


def test_kafka_table_passes_through_with_quoted_and_bare_dotted_keys(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\n"fetch.min.bytes" = 5\nsocket.timeout.ms = 1000\n'
                           'enable.ssl.certificate.verification = false\n'
                           'client.rack = "eu-1a"\n')
    s = Settings.load(path, env={})
    assert dict(s.kafka) == {"fetch.min.bytes": "5", "socket.timeout.ms": "1000",
                             "enable.ssl.certificate.verification": "false",
                             "client.rack": "eu-1a"}


def test_kafka_properties_follow_the_same_precedence(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\n"socket.timeout.ms" = 1\n"fetch.min.bytes" = 1\n'
                           '"client.rack" = "file"\n')
    env = {"FRAUDSTREAM_KAFKA__SOCKET_TIMEOUT_MS": "2", "FRAUDSTREAM_KAFKA__FETCH_MIN_BYTES": "2"}
    s = Settings.load(path, overrides={"kafka": {"socket.timeout.ms": 3}}, env=env)
    assert dict(s.kafka) == {"socket.timeout.ms": "3", "fetch.min.bytes": "2",
                             "client.rack": "file"}


def test_pass_through_properties_win_in_client_config() -> None:
    s = Settings.load(env={"FRAUDSTREAM_CLIENT_ID": "typed",
                           "FRAUDSTREAM_KAFKA__CLIENT_ID": "raw"})
    conf = s.kafka_client_config()
    assert conf["client.id"] == "raw"
    assert conf["bootstrap.servers"] == "127.0.0.1:9092"
    assert conf["security.protocol"] == "PLAINTEXT"


def test_kafka_mapping_is_read_only() -> None:
    s = Settings.load(env={"FRAUDSTREAM_KAFKA__LINGER_MS": "1"})
    with pytest.raises(TypeError):
        s.kafka["linger.ms"] = "2"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.partitions = 1  # type: ignore[misc]


def test_producer_and_consumer_config() -> None:
    s = Settings.load(env={"FRAUDSTREAM_GROUP_ID": "g1", "FRAUDSTREAM_MAX_MESSAGE_BYTES": "900000"})
    prod = s.producer_config(**{"linger.ms": 50})
    assert prod["enable.idempotence"] is True and prod["acks"] == "all"
    assert prod["linger.ms"] == 50  # extra wins
    assert prod["message.max.bytes"] == 1_800_000
    cons = s.consumer_config()
    assert cons["group.id"] == "g1" and cons["isolation.level"] == "read_committed"
    assert cons["enable.auto.commit"] is False
    assert s.consumer_config("other")["group.id"] == "other"


def test_pass_through_properties_beat_producer_and_consumer_defaults() -> None:
    s = Settings.load(env={"FRAUDSTREAM_KAFKA__COMPRESSION_TYPE": "zstd",
                           "FRAUDSTREAM_KAFKA__FETCH_WAIT_MAX_MS": "20"})
    assert s.producer_config()["compression.type"] == "zstd"
    assert s.consumer_config()["fetch.wait.max.ms"] == "20"
    assert s.producer_config(**{"compression.type": "none"})["compression.type"] == "none"


def test_commit_min_interval_is_bounded_by_the_interval() -> None:
    assert Settings.load(env={"FRAUDSTREAM_COMMIT_MIN_INTERVAL_MS": "0"}).commit_min_interval_ms == 0
    with pytest.raises(ConfigError, match="commit_min_interval_ms"):
        Settings.load(env={"FRAUDSTREAM_COMMIT_INTERVAL_MS": "50",
                           "FRAUDSTREAM_COMMIT_MIN_INTERVAL_MS": "60"})


# ---------------------------------------------------------------------- secrets
def test_secret_never_shows_its_value() -> None:
    secret = Secret("hunter2")
    assert str(secret) == MASK and "hunter2" not in repr(secret)
    assert f"{secret}" == MASK
    assert secret.reveal() == "hunter2"


def test_secrets_stay_out_of_repr_str_and_redacted_but_reach_the_client(tmp_path: Path) -> None:
    path = write(tmp_path, 'sasl_password = "file-pw"\nssl_key_password = "key-pw"\n'
                           'sasl_mechanism = "PLAIN"\nsasl_username = "svc"\n'
                           'security_protocol = "sasl_ssl"\n')
    env = {"FRAUDSTREAM_SASL_PASSWORD": "env-pw",
           "FRAUDSTREAM_KAFKA__SASL_OAUTHBEARER_CLIENT_SECRET": "oauth-pw"}
    s = Settings.load(path, env=env)
    assert isinstance(s.sasl_password, Secret)
    shown = [repr(s), str(s), repr(s.redacted()), str(s.redacted())]
    for text in shown:
        for value in ("env-pw", "key-pw", "oauth-pw"):
            assert value not in text, (value, text)
    red = s.redacted()
    assert red["sasl_password"] == MASK and red["ssl_key_password"] == MASK
    assert red["kafka"] == {"sasl.oauthbearer.client.secret": MASK}
    assert red["sasl_username"] == "svc" and red["partitions"] == 6
    assert "sasl_username='svc'" in repr(s)

    conf = s.kafka_client_config()
    assert conf["sasl.password"] == "env-pw"
    assert conf["ssl.key.password"] == "key-pw"
    assert conf["sasl.oauthbearer.client.secret"] == "oauth-pw"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.username"] == "svc"


def test_unset_secrets_are_left_out_of_client_config() -> None:
    conf = Settings.load(env={"FRAUDSTREAM_SASL_PASSWORD": ""}).kafka_client_config()
    assert "sasl.password" not in conf and "ssl.key.password" not in conf


def test_redact_client_config_masks_credentials_only() -> None:
    conf = {"bootstrap.servers": "b:9092", "sasl.username": "svc", "sasl.password": "pw",
            "ssl.key.password": "kpw", "ssl.key.pem": "-----BEGIN", "sasl.jaas.config": "x",
            "sasl.oauthbearer.client.secret": "s", "linger.ms": 5}
    red = redact_client_config(conf)
    assert red == {"bootstrap.servers": "b:9092", "sasl.username": "svc", "sasl.password": MASK,
                   "ssl.key.password": MASK, "ssl.key.pem": MASK, "sasl.jaas.config": MASK,
                   "sasl.oauthbearer.client.secret": MASK, "linger.ms": 5}
    assert conf["sasl.password"] == "pw"  # the input is left alone
    assert is_secret_property("SASL.PASSWORD") and not is_secret_property("sasl.username")


# ---------------------------------------------------------------------- invalid values
@pytest.mark.parametrize("env,fragments", [
    ({"FRAUDSTREAM_PARTITIONS": "six"}, ("environment", "partitions='six'", "invalid")),
    ({"FRAUDSTREAM_PARTITIONS": "6.5"}, ("partitions='6.5'",)),
    ({"FRAUDSTREAM_PARTITIONS": ""}, ("partitions",)),
    ({"FRAUDSTREAM_PARTITIONS": "0"}, ("partitions: must be at least 1, got 0",)),
    ({"FRAUDSTREAM_MAX_MESSAGE_BYTES": "-1"}, ("max_message_bytes: must be at least 1",)),
    ({"FRAUDSTREAM_PROCESSING_GUARANTEE": "at_most_once"},
     ("processing_guarantee: must be one of exactly_once, at_least_once, got 'at_most_once'",)),
    ({"FRAUDSTREAM_REVIEW_THRESHOLD": "1.5"}, ("review_threshold: must be between 0 and 1",)),
    ({"FRAUDSTREAM_BLOCK_THRESHOLD": "-0.1"}, ("block_threshold: must be between 0 and 1",)),
    ({"FRAUDSTREAM_BLOCK_THRESHOLD": "nan"}, ("block_threshold",)),
    ({"FRAUDSTREAM_REVIEW_THRESHOLD": "high"}, ("review_threshold='high'",)),
    ({"FRAUDSTREAM_REVIEW_THRESHOLD": "0.8", "FRAUDSTREAM_BLOCK_THRESHOLD": "0.7"},
     ("review_threshold: must not exceed block_threshold (0.8 > 0.7)",)),
    ({"FRAUDSTREAM_REVIEW_BUDGET": "0"}, ("review_budget: must be above 0 and at most 1",)),
    ({"FRAUDSTREAM_REVIEW_BUDGET": "nan"}, ("review_budget",)),
    ({"FRAUDSTREAM_QUALITY_METRICS_INTERVAL_S": "0"},
     ("quality_metrics_interval_s: must be above 0",)),
    ({"FRAUDSTREAM_STATE_CACHE_ENTRIES": "0"}, ("state_cache_entries: must be >= 1",)),
    ({"FRAUDSTREAM_STATE_ROW_CACHE_MB": "-1"}, ("state_row_cache_mb: must be >= 0",)),
    ({"FRAUDSTREAM_SECURITY_PROTOCOL": "TLS"}, ("security_protocol",)),
    ({"FRAUDSTREAM_LOG_LEVEL": "LOUD"}, ("log_level",)),
    ({"FRAUDSTREAM_LOCAL_KAFKA_PORT": "65535"}, ("local_kafka_port",)),
    ({"FRAUDSTREAM_BOOTSTRAP_SERVERS": "  "}, ("bootstrap_servers",)),
    ({"FRAUDSTREAM_TOPIC_SCORES": "fraudstream.events"}, ("topic_",)),
])
def test_invalid_env_values_name_the_setting(env: dict[str, str],
                                             fragments: tuple[str, ...]) -> None:
    config_error(*fragments, env=env)


@pytest.mark.parametrize("toml,fragments", [
    ("partitions = 1.5\n", ("partitions=1.5", "expected an integer")),
    ("partitions = true\n", ("partitions=True", "expected an integer")),
    ('partitions = "many"\n', ("partitions='many'",)),
    ("review_threshold = true\n", ("review_threshold=True",)),
    ("bootstrap_servers = [1, 2]\n", ("bootstrap_servers", "expected a string")),
    ('processing_guarantee = "maybe"\n', ("processing_guarantee",)),
    ("review_threshold = 0.95\nblock_threshold = 0.9\n", ("review_threshold: must not exceed",)),
    ("block_threshold = 2\n", ("block_threshold: must be between 0 and 1, got 2.0",)),
    ('partitons = 3\n', ("unknown setting 'partitons'",)),
    ('[worker]\ngroup_id = "g"\n', ("unknown setting 'worker'",)),
    ('kafka = "socket.timeout.ms=1"\n', ("[kafka] must be a table",)),
])
def test_invalid_file_values_name_the_setting(tmp_path: Path, toml: str,
                                              fragments: tuple[str, ...]) -> None:
    path = write(tmp_path, toml)
    err = config_error(*fragments, config_file=path)
    assert "Traceback" not in str(err)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    config_error("config file not found", str(missing), config_file=missing)
    config_error("config file not found", env={"FRAUDSTREAM_CONFIG": str(missing)})
    bad = write(tmp_path, "partitions = = 3\n")
    config_error(str(bad), "not valid TOML", config_file=bad)


def test_invalid_overrides_name_the_setting() -> None:
    config_error("command line", "unknown setting 'partition'", overrides={"partition": 3})
    config_error("command line", "partitions='x'", overrides={"partitions": "x"})
    config_error("review_threshold: must not exceed", overrides={"review_threshold": 0.95})


def test_secret_values_are_not_echoed_in_errors(tmp_path: Path) -> None:
    path = write(tmp_path, 'sasl_password = "hunter2"\npartitions = "x"\n')
    err = config_error("partitions", config_file=path)
    assert "hunter2" not in str(err)


def test_replace_coerces_and_validates() -> None:
    s = Settings.load(env={})
    t = s.replace(partitions="3", sasl_password="pw", kafka={"linger.ms": "1"})
    assert (t.partitions, t.sasl_password, dict(t.kafka)) == (3, Secret("pw"), {"linger.ms": "1"})
    assert s.partitions == 6  # the original is unchanged
    with pytest.raises(ConfigError, match="review_threshold"):
        s.replace(review_threshold=0.95)
    with pytest.raises(ConfigError, match="unknown setting 'nope'"):
        s.replace(nope=1)
