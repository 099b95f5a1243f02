"""A real, single-node Apache Kafka for development, tests, benchmarks and the demo.

``fraudstream kafka up`` (or ``deploy/kafka/kafka.sh up``) does, in order:

1. resolves Apache Kafka's broker jars (``org.apache.kafka:kafka_2.13``, version pinned in
   ``pom.xml`` beside this file, with its runtime dependencies) through Maven into a cache
   directory, once; later runs find the cache complete and download nothing;
2. writes a KRaft configuration in which one JVM is both broker and controller, listening on
   127.0.0.1 only, with every replication factor and min ISR at 1 so transactions work;
3. formats the storage directory the first time;
4. starts the JVM in its own session, writes its PID (with the process start time, so a recycled PID
   is never mistaken for it) and waits until the broker answers metadata requests.

``down`` stops exactly the PID it recorded: SIGTERM, then SIGKILL if it has not exited in time.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from stream.exceptions import LocalKafkaError

__all__ = ["LocalKafka", "BrokerStatus", "kafka_version"]

_HERE = Path(__file__).resolve().parent
POM = _HERE / "pom.xml"
LOG4J = _HERE / "log4j2.yaml"
_COMPLETE = ".complete"


def kafka_version() -> str:
    """The Apache Kafka version pinned in ``pom.xml``."""
    match = re.search(r"<kafka.version>([^<]+)</kafka.version>", POM.read_text())
    if not match:  # pragma: no cover - the pom ships with the package
        raise LocalKafkaError(f"{POM} does not pin kafka.version")
    return match.group(1)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool
    pid: int | None
    bootstrap: str
    version: str
    home: Path
    detail: str = ""


class LocalKafka:
    """One local broker+controller process rooted at ``home`` (config, data, log, PID file)."""

    def __init__(self, home: str | os.PathLike[str], cache_dir: str | os.PathLike[str],
                 host: str = "127.0.0.1", port: int = 9092, heap: str = "1g",
                 log=None, properties: dict[str, str] | None = None) -> None:
        """``properties``: broker settings added to (or replacing) the defaults written on
        ``up``, e.g. ``{"transaction.partition.verification.enable": "false"}``."""
        self.home = Path(home).resolve()
        self.properties = dict(properties or {})
        self.cache_dir = Path(cache_dir).resolve()
        self.host = host
        self.port = port
        self.controller_port = port + 1
        self.heap = heap
        self.version = kafka_version()
        self._log = log or (lambda msg: print(msg, file=sys.stderr))

    # ------------------------------------------------------------------ paths
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def jars_dir(self) -> Path:
        return self.cache_dir / f"kafka_2.13-{self.version}"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    @property
    def config_file(self) -> Path:
        return self.home / "server.properties"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    # ------------------------------------------------------------------ fetch
    def is_fetched(self) -> bool:
        return (self.jars_dir / _COMPLETE).exists()

    def fetch(self) -> bool:
        """Resolve the broker jars into the cache; returns False when the cache was already there.

        Several processes may start brokers on one cache at once (parallel test workers, two
        ``kafka up``): an exclusive lock on a file in the cache lets one fetch while the others
        wait and then find the cache complete, so no process replaces jars another one is using.
        """
        if self.is_fetched():
            return False
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError("Maven ('mvn') is not on PATH; it is needed once to fetch "
                                  f"Apache Kafka {self.version}'s jars")
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        with open(self.cache_dir / ".fetch.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
            if self.is_fetched():
                return False
            self._fetch_locked(mvn)
        return True

    def _fetch_locked(self, mvn: str) -> None:
        staging = Path(tempfile.mkdtemp(prefix=".fetch-", dir=self.cache_dir))
        self._log(f"fetching Apache Kafka {self.version} jars through Maven into {self.jars_dir}")
        started = time.monotonic()
        try:
            proc = subprocess.run(
                [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
                 "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
                capture_output=True, text=True, timeout=900,
            )
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
                raise LocalKafkaError("Maven could not fetch Apache Kafka's jars:\n  "
                                      + "\n  ".join(tail))
            if not any(staging.glob(f"kafka_2.13-{self.version}.jar")):
                raise LocalKafkaError(f"Maven finished but kafka_2.13-{self.version}.jar is missing "
                                      f"from {staging}")
            (staging / _COMPLETE).write_text(self.version + "\n")
            if self.jars_dir.exists():  # an earlier interrupted fetch left a partial directory
                shutil.rmtree(self.jars_dir)
            staging.rename(self.jars_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        self._log(f"fetched in {time.monotonic() - started:.1f}s")

    # ------------------------------------------------------------------ status
    def _read_pid(self) -> tuple[int, str] | None:
        try:
            pid_text, _, start = self.pid_file.read_text().strip().partition(" ")
            return int(pid_text), start
        except (FileNotFoundError, ValueError):
            return None

    def _owned_pid(self) -> int | None:
        """The recorded PID if that process is still the broker we started, else None."""
        record = self._read_pid()
        if record is None:
            return None
        pid, start = record
        if _process_start_time(pid) != start or not start:
            return None
        return pid

    def status(self) -> BrokerStatus:
        pid = self._owned_pid()
        if pid is None:
            return BrokerStatus(False, None, self.bootstrap, self.version, self.home, "not running")
        answering = _metadata_answers(self.bootstrap, timeout=2.0)
        detail = "answering metadata requests" if answering else "process up, not answering yet"
        return BrokerStatus(True, pid, self.bootstrap, self.version, self.home, detail)

    # ------------------------------------------------------------------ up / down
    def up(self, timeout: float = 90.0) -> BrokerStatus:
        """Fetch if needed, format if needed, start, and wait until metadata requests succeed."""
        current = self.status()
        if current.running:
            if not _metadata_answers(self.bootstrap, timeout=timeout):
                raise LocalKafkaError(f"broker PID {current.pid} is running but does not answer on "
                                      f"{self.bootstrap}; see {self.log_file}")
            return current
        java = _java()
        self.fetch()
        for port in (self.port, self.controller_port):
            if not _port_free(self.host, port):
                raise LocalKafkaError(f"port {self.host}:{port} is already in use; choose another "
                                      "with --port (the controller uses port+1)")
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_config()
        self._format(java)
        classpath = str(self.jars_dir / "*")
        cmd = [
            java, "-Xms256m", f"-Xmx{self.heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J}",
            f"-Dfraudstream.broker.log={self.log_file}",
            "-cp", classpath, "kafka.Kafka", str(self.config_file),
        ]
        started = time.monotonic()
        stdout = open(self.home / "broker.stdout", "ab")
        try:
            proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.home)
        finally:
            stdout.close()
        self.pid_file.write_text(f"{proc.pid} {_process_start_time(proc.pid)}\n")
        deadline = started + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(f"the broker exited with code {proc.returncode} during "
                                      f"start-up:\n{self._log_tail()}")
            if _metadata_answers(self.bootstrap, timeout=1.0):
                self._log(f"Apache Kafka {self.version} up on {self.bootstrap} (PID {proc.pid}) "
                          f"in {time.monotonic() - started:.1f}s")
                return BrokerStatus(True, proc.pid, self.bootstrap, self.version, self.home,
                                    "answering metadata requests")
            time.sleep(0.2)
        self._stop_pid(proc.pid, grace=10.0)
        raise LocalKafkaError(f"the broker did not answer within {timeout:.0f}s:\n{self._log_tail()}")

    def down(self, grace: float = 30.0) -> bool:
        """Stop the broker this home started; returns False when none was running."""
        pid = self._owned_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._stop_pid(pid, grace)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _stop_pid(self, pid: int, grace: float) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if not _alive(pid):
                return
            time.sleep(0.1)
        self._log(f"broker PID {pid} still running after {grace:.0f}s; sending SIGKILL")
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        while _alive(pid):
            time.sleep(0.05)

    # ------------------------------------------------------------------ config and storage
    def _write_config(self) -> None:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@{self.host}:{self.controller_port}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},"
                         f"CONTROLLER://{self.host}:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "min.insync.replicas": "1",
            "default.replication.factor": "1",
            "group.initial.rebalance.delay.ms": "0",
            "message.max.bytes": "2097152",
            "log.retention.hours": "168",
        }
        props.update(self.properties)
        text = "# Written by fraudstream's local Kafka manager; changes are overwritten on `up`.\n"
        text += "".join(f"{k}={v}\n" for k, v in props.items())
        self.config_file.write_text(text)

    def _format(self, java: str) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = _kafka_uuid()
        proc = subprocess.run(
            [java, "-Xmx256m", f"-Dlog4j2.configurationFile={LOG4J}",
             f"-Dfraudstream.broker.log={self.home / 'format.log'}",
             "-cp", str(self.jars_dir / "*"), "kafka.tools.StorageTool", "format",
             "-t", cluster_id, "-c", str(self.config_file)],
            capture_output=True, text=True, timeout=120,
        )
        if proc.returncode != 0:
            raise LocalKafkaError("formatting KRaft storage failed:\n"
                                  + "\n".join((proc.stdout + proc.stderr).splitlines()[-10:]))

    def _log_tail(self, lines: int = 25) -> str:
        chunks = []
        for path in (self.home / "broker.stdout", self.log_file):
            try:
                chunks.extend(path.read_text(errors="replace").splitlines()[-lines:])
            except FileNotFoundError:
                pass
        return "\n".join(chunks[-lines:]) or "(no broker output)"


# ---------------------------------------------------------------------- helpers
def _java() -> str:
    """The java binary: $JAVA_HOME/bin/java if set, else the one on PATH; must be 17 or newer."""
    candidates = []
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidates.append(str(Path(java_home) / "bin" / "java"))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(on_path)
    for java in candidates:
        if not os.access(java, os.X_OK):
            continue
        proc = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
        match = re.search(r'version "(\d+)', proc.stderr + proc.stdout)
        if match and int(match.group(1)) >= 17:
            return java
    raise LocalKafkaError("Java 17 or newer is needed to run Apache Kafka 4.x; none found "
                          "(set JAVA_HOME or put java on PATH)")


def _kafka_uuid() -> str:
    """A KRaft cluster id: 16 random bytes in URL-safe base64 without padding.

    Never one starting with "-": ``kafka-storage format -t -xyz`` reads it as an option and fails
    (1 run in 64). Kafka's own ``Uuid.randomUuid()`` draws again in that case too.
    """
    import base64

    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


def _process_start_time(pid: int) -> str:
    """The kernel's start time of ``pid`` (field 22 of /proc/PID/stat), '' if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    # The command name (field 2) may contain spaces; fields after it are separated cleanly.
    fields_after_name = stat.rsplit(")", 1)[1].split()
    return fields_after_name[19] if len(fields_after_name) > 19 else ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, IndexError):
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _metadata_answers(bootstrap: str, timeout: float) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 1000,
                         "log_level": 0, "logger": _quiet_logger()})
    try:
        md = admin.list_topics(timeout=timeout)
        return bool(md.brokers)
    except KafkaException:
        return False


def _quiet_logger():
    import logging

    logger = logging.getLogger("fraudstream.localkafka.probe")
    logger.addHandler(logging.NullHandler())
    logger.propagate = False
    return logger


def main(argv: list[str] | None = None) -> int:
    """``python -m stream.localkafka up|down|status`` (what deploy/kafka/kafka.sh runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="kafka.sh", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("up", "down", "status", "fetch"))
    parser.add_argument("--port", type=int, default=9092)
    parser.add_argument("--dir", default=".fraudstream/kafka", help="config, data, logs, PID")
    parser.add_argument("--cache", default=".cache/kafka", help="where the jars are kept")
    args = parser.parse_args(argv)
    broker = LocalKafka(args.dir, args.cache, port=args.port)
    try:
        if args.action == "fetch":
            broker.fetch()
        elif args.action == "up":
            st = broker.up()
            print(f"running: PID {st.pid}, bootstrap {st.bootstrap}, Apache Kafka {st.version}")
        elif args.action == "down":
            print("stopped" if broker.down() else "not running")
        else:
            st = broker.status()
            print(f"{'running' if st.running else 'stopped'}: {st.detail}"
                  + (f", PID {st.pid}, bootstrap {st.bootstrap}" if st.running else ""))
            return 0 if st.running else 3
    except LocalKafkaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0
