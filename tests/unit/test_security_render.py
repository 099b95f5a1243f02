"""SASL/SCRAM and TLS settings render into librdkafka configuration and never into output.

docs/security.md tells operators to set FRAUDSTREAM_SECURITY_PROTOCOL, FRAUDSTREAM_SASL_* and
FRAUDSTREAM_SSL_* (the password from a Kubernetes Secret); these tests hold the Settings class to
that: every client configuration carries them, and ``repr``, ``redacted()``, ``config show`` and
``redact_client_config`` mask the credentials.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from stream.exceptions import ConfigError
from stream.settings import ENV_PREFIX, Secret, Settings, redact_client_config

ROOT = Path(__file__).resolve().parents[2]
SECURITY_DOC = ROOT / "docs" / "security.md"

PASSWORD = "s3cr3t-scram-pa55"
KEY_PASSWORD = "k3y-pa55phrase"
JAAS = "org.apache.kafka.common.security.scram.ScramLoginModule required;"

SCRAM_TLS_ENV = {
    "FRAUDSTREAM_BOOTSTRAP_SERVERS": "kafka-0.kafka.svc:9093",
    "FRAUDSTREAM_SECURITY_PROTOCOL": "SASL_SSL",
    "FRAUDSTREAM_SASL_MECHANISM": "SCRAM-SHA-512",
    "FRAUDSTREAM_SASL_USERNAME": "fraudstream",
    "FRAUDSTREAM_SASL_PASSWORD": PASSWORD,
    "FRAUDSTREAM_SSL_CA_LOCATION": "/etc/fraudstream/kafka-ca/ca.crt",
}
MTLS_ENV = {
    "FRAUDSTREAM_SECURITY_PROTOCOL": "SSL",
    "FRAUDSTREAM_SSL_CA_LOCATION": "/etc/fraudstream/kafka-ca/ca.crt",
    "FRAUDSTREAM_SSL_CERTIFICATE_LOCATION": "/etc/fraudstream/client/tls.crt",
    "FRAUDSTREAM_SSL_KEY_LOCATION": "/etc/fraudstream/client/tls.key",
    "FRAUDSTREAM_SSL_KEY_PASSWORD": KEY_PASSWORD,
}


@pytest.fixture
def scram() -> Settings:
    return Settings.load(env=SCRAM_TLS_ENV)


@pytest.fixture
def mtls() -> Settings:
    return Settings.load(env=MTLS_ENV)


# ---------------------------------------------------------------------- rendering
def test_scram_over_tls_renders_into_every_client(scram):
    expected = {
        "bootstrap.servers": "kafka-0.kafka.svc:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "fraudstream",
        "sasl.password": PASSWORD,
        "ssl.ca.location": "/etc/fraudstream/kafka-ca/ca.crt",
    }
    for conf in (scram.kafka_client_config(), scram.producer_config(),
                 scram.consumer_config(), scram.consumer_config(group_id="other")):
        for key, value in expected.items():
            assert conf[key] == value, key
    assert isinstance(scram.sasl_password, Secret)
    assert scram.sasl_password.reveal() == PASSWORD


def test_mutual_tls_renders_certificate_and_key(mtls):
    conf = mtls.kafka_client_config()
    assert conf["security.protocol"] == "SSL"
    assert conf["ssl.certificate.location"] == "/etc/fraudstream/client/tls.crt"
    assert conf["ssl.key.location"] == "/etc/fraudstream/client/tls.key"
    assert conf["ssl.key.password"] == KEY_PASSWORD
    assert not any(k.startswith("sasl.") for k in conf)


def test_plaintext_default_renders_no_security_properties():
    conf = Settings.load(env={}).kafka_client_config()
    assert conf["security.protocol"] == "PLAINTEXT"
    assert not any(k.startswith(("sasl.", "ssl.")) for k in conf)


def test_empty_secret_values_mean_unset():
    # The Kubernetes base Secret carries empty strings for a PLAINTEXT cluster.
    settings = Settings.load(env={"FRAUDSTREAM_SASL_USERNAME": "", "FRAUDSTREAM_SASL_PASSWORD": "",
                                  "FRAUDSTREAM_SSL_KEY_PASSWORD": ""})
    assert settings.sasl_password is None and settings.ssl_key_password is None
    assert "sasl.password" not in settings.kafka_client_config()


def test_protocol_is_case_insensitive_and_validated():
    settings = Settings.load(env={"FRAUDSTREAM_SECURITY_PROTOCOL": "sasl_ssl"})
    assert settings.kafka_client_config()["security.protocol"] == "SASL_SSL"
    with pytest.raises(ConfigError, match="security_protocol"):
        Settings.load(env={"FRAUDSTREAM_SECURITY_PROTOCOL": "TLS"})


def test_passthrough_properties_win_and_reach_librdkafka(scram):
    env = dict(SCRAM_TLS_ENV, FRAUDSTREAM_KAFKA__SSL_ENDPOINT_IDENTIFICATION_ALGORITHM="https",
               FRAUDSTREAM_KAFKA__SASL_JAAS_CONFIG=JAAS)
    conf = Settings.load(env=env).kafka_client_config()
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert conf["sasl.jaas.config"] == JAAS


def test_librdkafka_accepts_the_rendered_configuration(scram, mtls):
    # Constructing a client parses every property: a misspelt or unsupported key (or a build
    # without SCRAM) fails here rather than in production. The certificate files do not exist
    # here, so their paths are left out, and the client points at a closed loopback port.
    from confluent_kafka import Producer

    for settings in (scram, mtls):
        conf = settings.producer_config()
        for key in ("ssl.ca.location", "ssl.certificate.location", "ssl.key.location"):
            conf.pop(key, None)
        conf["bootstrap.servers"] = "127.0.0.1:9"
        producer = Producer(conf)
        assert producer.flush(0) == 0
        del producer


# ---------------------------------------------------------------------- masking
def _all_secrets() -> list[str]:
    return [PASSWORD, KEY_PASSWORD, JAAS]


@pytest.fixture
def everything() -> Settings:
    return Settings.load(env={**SCRAM_TLS_ENV, **{k: v for k, v in MTLS_ENV.items()
                                                   if k != "FRAUDSTREAM_SECURITY_PROTOCOL"},
                              "FRAUDSTREAM_KAFKA__SASL_JAAS_CONFIG": JAAS})


def test_repr_and_str_never_show_credentials(everything):
    for text in (repr(everything), str(everything), repr(everything.sasl_password),
                 str(everything.ssl_key_password), f"{everything}"):
        for secret in _all_secrets():
            assert secret not in text


def test_redacted_masks_credentials_and_keeps_the_rest(everything):
    shown = everything.redacted()
    dumped = json.dumps(shown, default=str)
    for secret in _all_secrets():
        assert secret not in dumped
    assert shown["sasl_password"] == shown["ssl_key_password"] != ""
    assert shown["kafka"]["sasl.jaas.config"] == shown["sasl_password"]
    assert shown["sasl_username"] == "fraudstream"
    assert shown["sasl_mechanism"] == "SCRAM-SHA-512"
    assert shown["ssl_ca_location"] == "/etc/fraudstream/kafka-ca/ca.crt"


def test_rendered_client_config_can_be_logged_redacted(everything):
    conf = everything.consumer_config()
    shown = json.dumps(redact_client_config(conf))
    for secret in _all_secrets():
        assert secret not in shown
    assert "SCRAM-SHA-512" in shown and "fraudstream" in shown


def test_config_show_masks_credentials(everything):
    from click.testing import CliRunner

    from stream.cli import main

    env = {**SCRAM_TLS_ENV, "FRAUDSTREAM_SSL_KEY_PASSWORD": KEY_PASSWORD,
           "FRAUDSTREAM_KAFKA__SASL_JAAS_CONFIG": JAAS}
    result = CliRunner().invoke(main, ["config", "show"], env=env)
    assert result.exit_code == 0, result.output
    for secret in _all_secrets():
        assert secret not in result.output
    assert "SCRAM-SHA-512" in result.output


# ---------------------------------------------------------------------- the doc
def test_security_doc_names_real_settings():
    text = SECURITY_DOC.read_text(encoding="utf-8")
    fields = {f.lower() for f in Settings.__dataclass_fields__}
    names = set(re.findall(r"\b" + ENV_PREFIX + r"[A-Z0-9_]+(?![A-Za-z0-9_<])", text))
    for name in names:
        if name.startswith(ENV_PREFIX + "KAFKA__") or name == ENV_PREFIX + "CONFIG":
            continue
        assert name[len(ENV_PREFIX):].lower() in fields, f"docs/security.md: {name} is no setting"
    for wanted in ("SECURITY_PROTOCOL", "SASL_MECHANISM", "SASL_USERNAME", "SASL_PASSWORD",
                   "SSL_CA_LOCATION", "SSL_CERTIFICATE_LOCATION", "SSL_KEY_LOCATION",
                   "SSL_KEY_PASSWORD"):
        assert ENV_PREFIX + wanted in names, f"docs/security.md does not explain {wanted}"
