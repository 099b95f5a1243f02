"""Session-wide test fixtures: a real Kafka broker, and settings pointing at it.

The broker comes from, in order: ``KAFKA_BOOTSTRAP`` if set; a testcontainers Kafka where a Docker
engine answers; else the project's own local Apache Kafka (``stream.localkafka``), started on free
ports in a temporary directory and stopped when the session ends. When none can be had, tests that
need Kafka fail if ``CI`` is set and skip otherwise.

``make test`` runs the test files on two pytest-xdist workers (``--dist loadfile``). Each worker is
a session of its own, so each starts (and stops) a broker of its own; they share the jar cache,
which one of them fetches while the other waits.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def _free_port_pair() -> int:
    """A port p with p and p+1 free on loopback (broker and controller)."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port >= 65534:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no pair of free loopback ports")


def _no_broker(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Kafka is required in CI and none could be had: {reason}", pytrace=False)
    pytest.skip(f"no Kafka broker: {reason}")


def _docker_answers() -> bool:
    try:
        from testcontainers.core.docker_client import DockerClient

        DockerClient().client.ping()
        return True
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


def _say(config: pytest.Config, line: str) -> None:
    """Print past output capture, so the log shows which broker (and version) tests ran on.

    A pytest-xdist worker has no terminal of its own: it hands its lines to the controller, which
    prints them when the worker finishes (``pytest_testnodedown`` below).
    """
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput.setdefault("kafka_lines", []).append(line)
    reporter = config.pluginmanager.getplugin("terminalreporter")
    capman = config.pluginmanager.getplugin("capturemanager")
    if reporter is None:
        return
    if capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        reporter.write_line(line)


@pytest.fixture(scope="session")
def kafka_bootstrap(request: pytest.FixtureRequest,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap address of a real Kafka broker for this test session."""
    from stream.localkafka import LocalKafka, _metadata_answers

    external = os.environ.get("KAFKA_BOOTSTRAP")
    if external:
        if not _metadata_answers(external, timeout=15):
            _no_broker(f"KAFKA_BOOTSTRAP={external} does not answer")
        _say(request.config, f"kafka: external broker at {external}")
        yield external
        return

    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = KafkaContainer("apache/kafka:4.1.1").with_kraft()
        container.start()
        try:
            bootstrap = container.get_bootstrap_server()
            _say(request.config, f"kafka: testcontainers apache/kafka:4.1.1 at {bootstrap}")
            yield bootstrap
        finally:
            container.stop()
        return

    home = tmp_path_factory.mktemp("kafka")
    broker = LocalKafka(home, ROOT / ".cache" / "kafka", port=_free_port_pair(),
                        log=lambda m: _say(request.config, f"kafka: {m}"))
    try:
        status = broker.up(timeout=120)
    except Exception as exc:  # noqa: BLE001 - reported as a failure or skip below
        _no_broker(f"local Apache Kafka did not start: {exc}")
    _say(request.config, f"kafka: Apache Kafka {status.version} (local, PID {status.pid}) "
                         f"at {status.bootstrap}")
    try:
        yield status.bootstrap
    finally:
        broker.down()


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings on the test broker with topic and group names unique to the test."""
    tag = uuid.uuid4().hex[:10]
    return Settings.load(env={}, overrides={
        "bootstrap_servers": kafka_bootstrap,
        "topic_events": f"t-{tag}.events",
        "topic_labels": f"t-{tag}.labels",
        "topic_scores": f"t-{tag}.scores",
        "topic_dead_letter": f"t-{tag}.dead-letter",
        "topic_training": f"t-{tag}.training",
        "topic_models": f"t-{tag}.models",
        "group_id": f"g-{tag}",
        "partitions": 3,
        "commit_interval_ms": 100,
        "state_dir": str(tmp_path / "state"),
    })


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # noqa: ANN001 - pytest-xdist's hook signature
    reporter = node.config.pluginmanager.getplugin("terminalreporter")
    if reporter is not None:
        for line in getattr(node, "workeroutput", {}).get("kafka_lines", []):
            reporter.write_line(f"[{node.gateway.id}] {line}")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)
