"""Publishing events and labels: the producer SDK behind ``fraudstream publish``.

Typical use (see README.md for a complete event)::

    with EventPublisher(Settings.load()) as pub:
        for event in events:
            pub.publish(event)

Every event is validated against the contract before it is sent (an invalid one raises
:class:`~stream.exceptions.DecodeError` and nothing is sent), keyed by ``user_id`` (labels by
``merchant_id``, where the scoring stage keeps its state), and produced with an idempotent producer.
Delivery reports are served as we go; a full local queue is waited out, never dropped; ``flush``
raises :class:`PublishError` if any message could not be delivered, so a caller always knows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError as _RdKafkaError
from confluent_kafka import Message, Producer

from stream.events import DEFAULT_MAX_BYTES, Event, Label, event_from_dict, label_from_dict
from stream.exceptions import DecodeError, KafkaError
from stream.settings import Settings

__all__ = ["EventPublisher", "PublishError", "PublishStats"]


class PublishError(KafkaError):
    """Some messages were not delivered; ``failures`` holds (key, error) pairs, at most 100."""

    def __init__(self, message: str, failures: list[tuple[bytes | None, str]]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass
class PublishStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    failures: list[tuple[bytes | None, str]] = field(default_factory=list)


class EventPublisher:
    """Validating, idempotent, delivery-checked producer of events and labels."""

    def __init__(self, settings: Settings, *, events_topic: str | None = None,
                 labels_topic: str | None = None, on_delivery: Callable[[Any, Message], None]
                 | None = None, **producer_overrides: Any) -> None:
        self.settings = settings
        self.events_topic = events_topic or settings.topic_events
        self.labels_topic = labels_topic or settings.topic_labels
        self.max_bytes = settings.max_message_bytes or DEFAULT_MAX_BYTES
        self.stats = PublishStats()
        self._lock = threading.Lock()
        self._user_callback = on_delivery
        self._producer = Producer(settings.producer_config(**producer_overrides))
        self._closed = False

    # ------------------------------------------------------------------ publishing
    def publish(self, event: Event | Mapping[str, Any]) -> Event:
        """Validate and send one event; returns the normalised event that was sent."""
        if not isinstance(event, Event):
            event = event_from_dict(event)
        payload = event.encode()
        if len(payload) > self.max_bytes:
            raise DecodeError(f"event is {len(payload)} bytes encoded, over the {self.max_bytes}-"
                              "byte limit", code="too_large")
        self._produce(self.events_topic, event.user_id.encode(), payload)
        return event

    def publish_label(self, label: Label | Mapping[str, Any]) -> Label:
        """Validate and send one label, keyed by merchant (the scoring stage's key)."""
        if not isinstance(label, Label):
            label = label_from_dict(label)
        self._produce(self.labels_topic, label.merchant_id.encode(), label.encode())
        return label

    def publish_raw(self, topic: str, value: bytes | None, key: bytes | None = None,
                    headers: list[tuple[str, bytes]] | None = None) -> None:
        """Send bytes unvalidated (for tools that forward records as they are)."""
        self._produce(topic, key, value, headers)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        # The record timestamp stays the publish time (CreateTime): event time lives in the
        # payload. Stamping historical event times on records would let retention delete a
        # replayed log as soon as it lands, and would hide end-to-end latency.
        if self._closed:
            raise KafkaError("publisher is closed")
        kwargs: dict[str, Any] = {"on_delivery": self._delivered}
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, value, key, **kwargs)
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room. Never drop.
                self._producer.poll(0.05)
        self.stats.sent += 1
        self._producer.poll(0)

    def _delivered(self, err: _RdKafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is None:
                self.stats.delivered += 1
            else:
                self.stats.failed += 1
                if len(self.stats.failures) < 100:
                    self.stats.failures.append((msg.key(), err.str()))
        if self._user_callback is not None:
            self._user_callback(err, msg)

    # ------------------------------------------------------------------ lifecycle
    def poll(self, timeout: float = 0.0) -> int:
        """Serve delivery reports; returns how many were served."""
        return self._producer.poll(timeout)

    def flush(self, timeout: float = 60.0) -> None:
        """Wait until every message is delivered or failed; raise if any failed or remain."""
        remaining = self._producer.flush(timeout)
        if remaining:
            raise PublishError(f"{remaining} messages still undelivered after {timeout:.0f}s",
                               list(self.stats.failures))
        if self.stats.failed:
            raise PublishError(f"{self.stats.failed} of {self.stats.sent} messages failed delivery; "
                               f"first error: {self.stats.failures[0][1]}", list(self.stats.failures))

    def close(self, timeout: float = 60.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True

    def __enter__(self) -> "EventPublisher":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            # Still deliver what was accepted, but do not mask the original exception.
            try:
                self.close()
            except KafkaError:
                pass
