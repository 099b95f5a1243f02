"""The registry of benchmark contenders: who runs, from which virtualenv, under which group.

A contender is a command line (a script in ``bench/peers/`` run by its virtualenv's python), the
virtualenv's requirements, and a consumer-group prefix. Every contender app takes the same
arguments and implements the same job, so the harness can start, measure and stop any of them:

    <python> <script> --bootstrap HOST:PORT --input TOPIC --output TOPIC --group GROUP
                      --state-dir DIR --window-ms MS --grace-ms MS --commit-interval SECONDS
                      --partitions N

The job: read JSON events keyed by user_id from ``--input`` (from the earliest offset, as group
``--group``), decode each value, count records per key in tumbling event-time windows of
``--window-ms`` on the record's Kafka timestamp, and for every input record produce
``{"start": ms, "end": ms, "value": count}`` under the same key to ``--output`` (one output per
input, so the harness can watch progress from outside). Commit the consumed offsets at least
every ``--commit-interval`` seconds after the outputs are flushed. Exit cleanly on SIGTERM.

Adding a contender: write ``bench/peers/<name>_count.py`` to that contract and add one
``Contender`` to ``contenders()``. ``requirements=None`` runs it in the project's own virtualenv
(the python running the harness); otherwise the harness creates
``.cache/bench-venvs/<name>/`` and pip-installs the requirements there, so a peer's pins never
touch the project venv.

Our own runtime runs twice: ``fraudstream`` (``bench/peers/fraudstream_count.py``, a thin app
over ``stream.runtime.Worker``: one keyed stage, one windowed count feature, an emitter for the
output) at-least-once like every peer, and ``fraudstream-eos``, the same app exactly-once.
Transactional output needs care from the harness, which watches progress through the output's
high watermarks: commit markers take offsets and aborted records stay in the log, so watermarks
over-count. A contender with ``exactly_once=True`` is therefore watched by consuming its output
read_committed and counting records (the read-back after each run is read_committed for all).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Contender", "BASELINE", "PEERS_DIR", "contenders", "by_name", "project_pins"]

PEERS_DIR = Path(__file__).resolve().parent / "peers"
BASELINE = "confluent-kafka"


def project_pins(*dists: str) -> tuple[str, ...]:
    """``dist==version`` for each distribution as installed in the project's virtualenv."""
    return tuple(f"{d}=={importlib.metadata.version(d)}" for d in dists)


@dataclass(frozen=True)
class Contender:
    name: str                       # also the venv folder name and the results key
    script: str                     # file name in bench/peers/
    group: str                      # consumer-group prefix; the harness adds round and run id
    state: str                      # what holds its window state (for the report)
    requirements: tuple[str, ...] | None  # pip requirements of its own venv; None = project venv
    dists: tuple[str, ...] = ()     # distributions whose versions the report shows
    baseline: bool = False
    needs_module: str | None = None  # importable in the project venv, or the contender is off
    default: bool = True            # part of a run when no --contenders are named
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    venv: str = ""                  # venv folder under .cache/bench-venvs/; defaults to name
    exactly_once: bool = False      # transactional output: count and read it read_committed

    @property
    def venv_name(self) -> str:
        return self.venv or self.name

    @property
    def script_path(self) -> Path:
        return PEERS_DIR / self.script

    def unavailable(self) -> str | None:
        """Why this contender cannot run here, or None when it can."""
        if self.needs_module is not None:
            try:
                found = importlib.util.find_spec(self.needs_module) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                return f"module {self.needs_module} does not exist yet"
        if not self.script_path.exists():
            return f"{self.script_path.relative_to(PEERS_DIR.parent.parent)} does not exist yet"
        return None


def contenders() -> tuple[Contender, ...]:
    """Every registered contender, in report order (the baseline first)."""
    return (
        Contender(
            name=BASELINE, script="confluent_count.py", group="bench-ck",
            state="Python dict, no changelog",
            # Same client and JSON library versions as the project: "what the client alone does".
            requirements=project_pins("confluent-kafka", "orjson"),
            dists=("confluent-kafka", "orjson"), baseline=True,
        ),
        Contender(
            name="quixstreams", script="quix_count.py", group="bench-quix",
            state="RocksDB (rocksdict) + changelog topic",
            requirements=("quixstreams",), dists=("quixstreams", "confluent-kafka", "rocksdict"),
        ),
        Contender(
            name="faust-streaming", script="faust_count.py", group="bench-faust",
            state="RocksDB (rocksdict, rocksdb:// store) + changelog topic",
            requirements=("faust-streaming[rocksdict]",),
            dists=("faust-streaming", "aiokafka", "mode-streaming", "rocksdict"),
        ),
        Contender(
            name="faust-streaming-memory", script="faust_count.py", group="bench-faustmem",
            state="memory:// store + changelog topic",
            requirements=("faust-streaming[rocksdict]",),
            dists=("faust-streaming", "aiokafka"), extra_args=("--store", "memory"),
            default=False, venv="faust-streaming",
        ),
        Contender(
            name="fraudstream", script="fraudstream_count.py", group="bench-fraudstream",
            state="fraudstream state store (RocksDB) + changelog",
            requirements=None, dists=("fraudstream", "confluent-kafka", "rocksdict"),
            needs_module="stream.runtime", extra_args=("--guarantee", "at_least_once"),
        ),
        Contender(
            name="fraudstream-eos", script="fraudstream_count.py", group="bench-fraudstream-eos",
            state="fraudstream state store (RocksDB) + changelog, exactly-once",
            requirements=None, dists=("fraudstream", "confluent-kafka", "rocksdict"),
            needs_module="stream.runtime", extra_args=("--guarantee", "exactly_once"),
            exactly_once=True,
        ),
    )


def by_name(name: str) -> Contender:
    known = contenders()
    for c in known:
        if c.name == name:
            return c
    raise KeyError(f"no contender {name!r}; known: {', '.join(c.name for c in known)}")
