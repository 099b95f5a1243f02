"""fraudstream's one settings object.

Every setting has a typed field on :class:`Settings`. Values come from, lowest priority first:

1. the field defaults below;
2. a TOML file (``--config FILE`` or ``FRAUDSTREAM_CONFIG``): top-level keys are field names, and a
   ``[kafka]`` table passes librdkafka properties through unchanged;
3. ``FRAUDSTREAM_<FIELD>`` environment variables (``FRAUDSTREAM_KAFKA__<PROP>`` for pass-through
   librdkafka properties, with ``_`` standing for ``.``, e.g. ``FRAUDSTREAM_KAFKA__SOCKET_TIMEOUT_MS``);
4. explicit overrides (CLI flags).

Nothing else in fraudstream reads ``os.environ``. Secrets are :class:`Secret` values: they render
into client configuration but never into ``repr``, logs or ``fraudstream config show``.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from stream.exceptions import ConfigError

__all__ = ["Secret", "Settings", "ENV_PREFIX"]

ENV_PREFIX = "FRAUDSTREAM_"
_KAFKA_ENV_PREFIX = ENV_PREFIX + "KAFKA__"
_MASK = "********"
# librdkafka properties whose values are credentials; masked wherever configuration is shown.
_SECRET_WORDS = ("password", "secret", "token", "key.pem", "sasl.jaas")


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential. ``str()``/``repr()`` never reveal it; call :meth:`reveal` where it is used."""

    _value: str = field(repr=False)

    def reveal(self) -> str:
        return self._value

    def __str__(self) -> str:
        return _MASK

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"


_GUARANTEES = ("exactly_once", "at_least_once")
_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class Settings:
    """Typed, immutable configuration. Build it with :meth:`load`; never mutate it."""

    # Kafka connection
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "fraudstream"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: Secret | None = None
    ssl_ca_location: str | None = None
    ssl_certificate_location: str | None = None
    ssl_key_location: str | None = None
    ssl_key_password: Secret | None = None
    kafka: Mapping[str, str] = field(default_factory=dict)

    # Topics
    topic_events: str = "fraudstream.events"
    topic_labels: str = "fraudstream.labels"
    topic_scores: str = "fraudstream.scores"
    topic_dead_letter: str = "fraudstream.dead-letter"
    # Joined training examples (workers -> trainer) and versioned model snapshots (trainer ->
    # workers). One partition each: one active trainer, one ordered history of versions.
    topic_training: str = "fraudstream.training"
    topic_models: str = "fraudstream.models"
    partitions: int = 6
    replication_factor: int = 1
    events_retention_ms: int = 7 * 24 * 3600 * 1000
    scores_retention_ms: int = 7 * 24 * 3600 * 1000
    dead_letter_retention_ms: int = 30 * 24 * 3600 * 1000

    # Wire contract
    max_message_bytes: int = 64 * 1024

    # Worker
    group_id: str = "fraudstream-worker"
    # Stable per worker process (it names the transactional id): a restarted worker with the same
    # instance id fences its predecessor's open transaction at once. Empty means the host name.
    instance_id: str | None = None
    transaction_timeout_ms: int = 10_000
    processing_guarantee: str = "exactly_once"
    # Outputs become visible when their batch commits: at the latest commit_interval_ms after
    # the batch's first record, earlier when the input is drained and the batch is at least
    # commit_min_interval_ms old (docs/runtime.md, "Latency").
    commit_interval_ms: int = 100
    commit_min_interval_ms: int = 10
    commit_every_records: int = 5000
    # Hand a record forwarded to the next stage straight to that stage's task when this worker
    # owns its partition, inside the same transaction, instead of through the repartition
    # topic (docs/runtime.md, "Local hand-off"): one commit fewer on an event's path.
    local_handoff: bool = True
    poll_batch_size: int = 1000
    state_dir: str = ".fraudstream/state"
    review_threshold: float = 0.5
    block_threshold: float = 0.9
    # Per-merchant overrides: "MERCHANT=REVIEW:BLOCK,..." e.g. "m7=0.3:0.6,m9=0.6:0.95".
    merchant_thresholds: str = ""
    model_name: str = "default"
    # Per-merchant models (docs/models.md): a correction to the global log-odds learned from each
    # merchant's labels in the worker, applied once trusted. Off by default: in backtests with
    # delayed labels they win on merchants with their own fraud signature, but where no merchant
    # has one, overall AP is level with the global model alone (docs/models.md has the numbers).
    merchant_models: bool = False
    # Feature definitions (TOML, see docs/features.md); empty means the default set.
    features_file: str | None = None
    # How often (wall-clock seconds) each task's store is swept for entities idle beyond their
    # TTL (event time); a sweep scans the whole partition store. 0 disables it.
    state_expiry_interval_s: float = 3600.0
    # Feature state kept as live objects per partition store (the write-back cache), and an
    # optional RocksDB row cache (encoded values, shared by all of the worker's stores) behind
    # it; docs/operations.md, "Sizing state caches".
    state_cache_entries: int = 200_000
    state_row_cache_mb: int = 0
    # Model quality the worker exports (docs/operations.md): precision and recall are measured at
    # this review budget (the fraction of labelled events a review team looks at, highest scores
    # first); the figures are recomputed every quality_metrics_interval_s wall-clock seconds, on
    # the processing thread (about 10 ms per scoring partition whose windows are full).
    review_budget: float = 0.01
    quality_metrics_interval_s: float = 15.0
    # Prometheus metrics and health endpoints (docs/operations.md). Loopback by default; containers
    # set FRAUDSTREAM_METRICS_HOST=0.0.0.0 so the orchestrator can probe and scrape them.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9400  # 0: serve no metrics or health endpoint
    # The global-model trainer (docs/models.md) publishes a snapshot after this many new examples,
    # or this many seconds after the first unpublished one.
    trainer_publish_every: int = 1000
    trainer_publish_interval_s: float = 60.0

    # Local development broker (``fraudstream kafka``)
    local_kafka_host: str = "127.0.0.1"
    local_kafka_port: int = 9092
    local_kafka_dir: str = ".fraudstream/kafka"
    local_kafka_cache_dir: str = ".cache/kafka"
    local_kafka_heap: str = "1g"

    # Keyed hashing of identifiers before they reach state, changelogs, scores and logs
    # (stream/pii.py). Unset: identifiers are kept as they are.
    pii_hash_key: Secret | None = None
    pii_fields: str = "user_id,card_id,device_id,ip"

    log_level: str = "INFO"
    log_format: str = "text"  # "text" or "json" (one object per line, with record context)

    def __repr__(self) -> str:
        # The generated repr would show pass-through ``kafka`` credentials (e.g. sasl.password).
        shown = ", ".join(f"{name}={value!r}" for name, value in self.redacted().items())
        return f"Settings({shown})"

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        config_file: str | os.PathLike[str] | None = None,
        overrides: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> "Settings":
        """Merge defaults, the TOML file, the environment and ``overrides`` (highest wins)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        kafka_props: dict[str, str] = {}

        path = config_file or env.get(ENV_PREFIX + "CONFIG")
        if path:
            file_values = _read_toml(Path(path))
            file_kafka = file_values.pop("kafka", {})
            if not isinstance(file_kafka, dict):
                raise ConfigError(f"{path}: [kafka] must be a table of librdkafka properties")
            kafka_props.update({k: _prop_str(v) for k, v in _flatten_table(file_kafka)})
            values.update(_coerce_all(file_values, f"config file {path}"))

        env_values: dict[str, Any] = {}
        for name, raw in env.items():
            if name.startswith(_KAFKA_ENV_PREFIX):
                prop = name[len(_KAFKA_ENV_PREFIX):].lower().replace("_", ".")
                kafka_props[prop] = raw
            elif name.startswith(ENV_PREFIX) and name != ENV_PREFIX + "CONFIG":
                key = name[len(ENV_PREFIX):].lower()
                if key in _FIELD_TYPES and key != "kafka":
                    env_values[key] = raw
                # Unknown FRAUDSTREAM_* names are ignored on purpose: other tools (and CI) set some.
        values.update(_coerce_all(env_values, "environment"))

        if overrides:
            over = {k: v for k, v in overrides.items() if v is not None}
            over_kafka = over.pop("kafka", None)
            if over_kafka:
                kafka_props.update({str(k): _prop_str(v) for k, v in over_kafka.items()})
            values.update(_coerce_all(over, "command line"))

        values["kafka"] = types.MappingProxyType(dict(kafka_props))
        settings = cls(**values)
        settings.validate()
        return settings

    def replace(self, **changes: Any) -> "Settings":
        """A copy with ``changes`` applied (coerced and validated like any other source)."""
        coerced = _coerce_all({k: v for k, v in changes.items() if k != "kafka"}, "replace")
        if "kafka" in changes:
            coerced["kafka"] = types.MappingProxyType(dict(changes["kafka"]))
        new = dataclasses.replace(self, **coerced)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid setting."""
        if not self.bootstrap_servers.strip():
            raise ConfigError("bootstrap_servers: must not be empty")
        if self.processing_guarantee not in _GUARANTEES:
            raise ConfigError(f"processing_guarantee: must be one of {', '.join(_GUARANTEES)}, "
                              f"got {self.processing_guarantee!r}")
        if self.security_protocol.upper() not in _SECURITY_PROTOCOLS:
            raise ConfigError(f"security_protocol: must be one of {', '.join(_SECURITY_PROTOCOLS)}, "
                              f"got {self.security_protocol!r}")
        for name in ("partitions", "replication_factor", "max_message_bytes", "commit_interval_ms",
                     "commit_every_records", "poll_batch_size", "local_kafka_port",
                     "transaction_timeout_ms"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.commit_min_interval_ms <= self.commit_interval_ms:
            raise ConfigError("commit_min_interval_ms: must be between 0 and commit_interval_ms "
                              f"({self.commit_interval_ms}), got {self.commit_min_interval_ms}")
        if self.trainer_publish_every < 1:
            raise ConfigError("trainer_publish_every: must be at least 1, "
                              f"got {self.trainer_publish_every}")
        if not self.trainer_publish_interval_s > 0:
            raise ConfigError("trainer_publish_interval_s: must be above 0, "
                              f"got {self.trainer_publish_interval_s}")
        if not 0 <= self.metrics_port <= 65535:
            raise ConfigError(f"metrics_port: must be between 0 (no endpoint) and 65535, "
                              f"got {self.metrics_port}")
        if not self.metrics_host.strip():
            raise ConfigError("metrics_host: must not be empty")
        if self.local_kafka_port > 65534:
            raise ConfigError(f"local_kafka_port: must be below 65535 (the controller uses port+1), "
                              f"got {self.local_kafka_port}")
        for name in ("review_threshold", "block_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}: must be between 0 and 1, got {value}")
        self.merchant_threshold_map()  # raises ConfigError on a malformed entry
        if self.review_threshold > self.block_threshold:
            raise ConfigError("review_threshold: must not exceed block_threshold "
                              f"({self.review_threshold} > {self.block_threshold})")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise ConfigError(f"log_level: unknown level {self.log_level!r}")
        if self.state_cache_entries < 1:
            raise ConfigError(f"state_cache_entries: must be >= 1, got {self.state_cache_entries}")
        if self.state_row_cache_mb < 0:
            raise ConfigError("state_row_cache_mb: must be >= 0 (0 disables the row cache), got "
                              f"{self.state_row_cache_mb}")
        if self.state_expiry_interval_s < 0:
            raise ConfigError("state_expiry_interval_s: must be >= 0 (0 disables sweeps), got "
                              f"{self.state_expiry_interval_s}")
        if not 0.0 < self.review_budget <= 1.0:
            raise ConfigError(f"review_budget: must be above 0 and at most 1, "
                              f"got {self.review_budget}")
        if not self.quality_metrics_interval_s > 0:
            raise ConfigError("quality_metrics_interval_s: must be above 0, "
                              f"got {self.quality_metrics_interval_s}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format: must be text or json, got {self.log_format!r}")
        topics = [self.topic_events, self.topic_labels, self.topic_scores, self.topic_dead_letter,
                  self.topic_training, self.topic_models]
        if len(set(topics)) != len(topics):
            raise ConfigError("topic_*: the events, labels, scores, dead-letter, training and models "
                              "topics must all differ")

    def merchant_threshold_map(self) -> dict[str, tuple[float, float]]:
        """``merchant_thresholds`` parsed: merchant id -> (review, block)."""
        out: dict[str, tuple[float, float]] = {}
        for item in (part.strip() for part in self.merchant_thresholds.split(",")):
            if not item:
                continue
            merchant, _, pair = item.partition("=")
            review, _, block = pair.partition(":")
            try:
                r, b = float(review), float(block)
            except ValueError:
                raise ConfigError(f"merchant_thresholds: {item!r} is not MERCHANT=REVIEW:BLOCK") \
                    from None
            if not merchant.strip() or not 0.0 <= r <= b <= 1.0:
                raise ConfigError(f"merchant_thresholds: {item!r} needs a merchant and "
                                  "0 <= review <= block <= 1")
            out[merchant.strip()] = (r, b)
        return out

    def thresholds_for(self, merchant_id: str | None) -> tuple[float, float]:
        """(review, block) for a merchant: its override, else the global thresholds."""
        if merchant_id is not None and self.merchant_thresholds:
            found = self.merchant_threshold_map().get(merchant_id)
            if found is not None:
                return found
        return self.review_threshold, self.block_threshold

    # ------------------------------------------------------------------ rendering
    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka properties common to every client (connection and security)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol.upper(),
            # TCP_NODELAY, as the Java clients always set it. With Nagle's algorithm on (the
            # librdkafka default) a request written while an earlier one is unacknowledged waits
            # for the broker's (delayed) ACK: pipelined produce requests and an exactly-once
            # commit's flush pay milliseconds per request (docs/runtime.md, "Latency").
            "socket.nagle.disable": True,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.reveal() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_ca_location,
            "ssl.certificate.location": self.ssl_certificate_location,
            "ssl.key.location": self.ssl_key_location,
            "ssl.key.password": self.ssl_key_password.reveal() if self.ssl_key_password else None,
        }
        conf.update({k: v for k, v in optional.items() if v is not None})
        conf.update(self.kafka)  # explicit pass-through properties win
        return conf

    def producer_config(self, **extra: Any) -> dict[str, Any]:
        """An idempotent producer tuned for low latency; ``extra`` properties win."""
        conf = self.kafka_client_config()
        conf.update({
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "message.max.bytes": max(1_000_000, self.max_message_bytes * 2),
        })
        conf.update(self.kafka)  # the operator's pass-through properties beat our defaults
        conf.update(extra)
        return conf

    def consumer_config(self, group_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """A read_committed consumer with manual commits; ``extra`` properties win."""
        conf = self.kafka_client_config()
        conf.update({
            "group.id": group_id or self.group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "partition.assignment.strategy": "cooperative-sticky",
        })
        conf.update(self.kafka)  # the operator's pass-through properties beat our defaults
        conf.update(extra)
        return conf

    def environment(self, *names: str) -> dict[str, str]:
        """``FRAUDSTREAM_*`` variables that give a child process these settings' ``names``.

        Secrets are revealed (the child needs them): pass the result only to a process
        environment, never to a log.

        >>> Settings(partitions=3, group_id="g").environment("partitions", "group_id")
        {'FRAUDSTREAM_PARTITIONS': '3', 'FRAUDSTREAM_GROUP_ID': 'g'}
        """
        out = {}
        for name in names:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, Secret):
                value = value.reveal()
            out[ENV_PREFIX + name.upper()] = str(value)
        return out

    def redacted(self) -> dict[str, Any]:
        """Every setting as plain data with secrets masked, for ``config show`` and logs."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, Secret):
                value = _MASK
            elif f.name == "kafka":
                value = {k: (_MASK if is_secret_property(k) else v) for k, v in value.items()}
            out[f.name] = value
        return out


def is_secret_property(name: str) -> bool:
    """Whether a librdkafka property holds a credential (its value must never be shown)."""
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def redact_client_config(conf: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a librdkafka configuration with credential values masked."""
    return {k: (_MASK if is_secret_property(k) else v) for k, v in conf.items()}


# ---------------------------------------------------------------------- coercion helpers
def _field_types() -> dict[str, Any]:
    hints = typing.get_type_hints(Settings)
    return {f.name: hints[f.name] for f in fields(Settings)}


_FIELD_TYPES = _field_types()


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None


def _flatten_table(table: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """``[kafka]`` entries as dotted librdkafka names: TOML reads the bare key
    ``socket.timeout.ms = 1000`` as nested tables, not as one key."""
    out: list[tuple[str, Any]] = []
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten_table(value, name + "."))
        else:
            out.append((name, value))
    return out


def _prop_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _coerce_all(values: Mapping[str, Any], source: str) -> dict[str, Any]:
    out = {}
    for key, raw in values.items():
        if key not in _FIELD_TYPES or key == "kafka":
            raise ConfigError(f"{source}: unknown setting {key!r}")
        out[key] = _coerce(key, _FIELD_TYPES[key], raw, source)
    return out


def _coerce(name: str, annotation: Any, raw: Any, source: str) -> Any:
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional, annotation = True, args[0]
    if raw is None or (optional and isinstance(raw, str) and raw == ""):
        if optional:
            return None
        raise ConfigError(f"{source}: {name} must not be empty")
    try:
        if annotation is Secret:
            return raw if isinstance(raw, Secret) else Secret(str(raw))
        if annotation is bool:
            if isinstance(raw, bool):
                return raw
            lowered = str(raw).strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError("expected true or false")
        if annotation is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError("expected an integer")
            return int(raw)
        if annotation is float:
            if isinstance(raw, bool):
                raise ValueError("expected a number")
            return float(raw)
        if annotation is str:
            if not isinstance(raw, (str, int, float)):
                raise ValueError("expected a string")
            return str(raw)
    except (TypeError, ValueError) as exc:
        shown = _MASK if annotation is Secret else repr(raw)
        raise ConfigError(f"{source}: {name}={shown} is invalid: {exc}") from None
    raise ConfigError(f"{source}: {name} cannot be set here")  # pragma: no cover
