"""The worker producer's guarantee-dependent settings (stream.runtime.worker.producer_defaults)."""

from __future__ import annotations

from stream.runtime.worker import AT_LEAST_ONCE_LINGER_MS, producer_defaults
from stream.settings import Settings


def test_exactly_once_retries_transactional_calls_soon_and_keeps_the_linger():
    conf = Settings(processing_guarantee="exactly_once").producer_config(
        **producer_defaults(Settings(processing_guarantee="exactly_once")))
    assert conf["retry.backoff.ms"] == 10
    assert conf["linger.ms"] == 5


def test_at_least_once_lingers_less():
    s = Settings(processing_guarantee="at_least_once")
    conf = s.producer_config(**producer_defaults(s))
    assert conf["linger.ms"] == AT_LEAST_ONCE_LINGER_MS < 5
    assert "retry.backoff.ms" not in producer_defaults(s)


def test_what_the_operator_passes_through_wins():
    for key in ("linger.ms", "queue.buffering.max.ms"):
        s = Settings(processing_guarantee="at_least_once", kafka={key: "7"})
        assert producer_defaults(s) == {}
        assert s.producer_config(**producer_defaults(s))[key] == "7"
    s = Settings(processing_guarantee="exactly_once", kafka={"retry.backoff.ms": "250"})
    assert producer_defaults(s) == {}
    assert s.producer_config(**producer_defaults(s))["retry.backoff.ms"] == "250"


def test_the_environment_reaches_it_under_its_librdkafka_name():
    s = Settings.load(env={"FRAUDSTREAM_PROCESSING_GUARANTEE": "at_least_once",
                           "FRAUDSTREAM_KAFKA__LINGER_MS": "1"})
    assert producer_defaults(s) == {}
    assert str(s.producer_config(**producer_defaults(s))["linger.ms"]) == "1"
