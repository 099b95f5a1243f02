"""The local broker manager's safety rules, without starting a broker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from stream.localkafka import LocalKafka, _kafka_uuid, _process_start_time, kafka_version


def test_version_is_a_4x_release():
    major = int(kafka_version().split(".")[0])
    assert major == 4


def test_down_never_signals_a_process_it_did_not_start(tmp_path: Path):
    # A PID file naming a live process whose start time differs (a recycled PID) must be ignored.
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        broker = LocalKafka(tmp_path, tmp_path / "cache")
        broker.home.mkdir(parents=True, exist_ok=True)
        broker.pid_file.write_text(f"{victim.pid} 12345\n")
        assert broker.status().running is False
        assert broker.down() is False
        assert victim.poll() is None  # still alive: not ours, not touched
        assert not broker.pid_file.exists()  # the stale record is cleared
    finally:
        victim.kill()
        victim.wait()


def test_pid_file_with_matching_start_time_is_recognised(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"],
                            start_new_session=True)
    try:
        broker = LocalKafka(tmp_path, tmp_path / "cache")
        broker.home.mkdir(parents=True, exist_ok=True)
        broker.pid_file.write_text(f"{proc.pid} {_process_start_time(proc.pid)}\n")
        assert broker._owned_pid() == proc.pid
        assert broker.down(grace=5) is True
        assert proc.wait(5) is not None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cluster_id_shape():
    ids = {_kafka_uuid() for _ in range(2000)}  # about 31 would start with "-" unchecked
    assert len(ids) == 2000
    assert all(len(i) == 22 and "=" not in i and not i.startswith("-") for i in ids)


def test_start_time_of_missing_process_is_empty():
    assert _process_start_time(2**22 + 12345) == ""
    assert _process_start_time(os.getpid()) != ""


_FAKE_MVN = """#!{python}
# Stands in for Maven: counts its runs, takes a while, then writes the broker jar where told.
import pathlib, sys, time
out = next(a.split("=", 1)[1] for a in sys.argv if a.startswith("-DoutputDirectory="))
with open({runs!r}, "a") as f:
    f.write("run\\n")
time.sleep(1.0)
pathlib.Path(out, "kafka_2.13-{version}.jar").write_text("jar")
"""


def _fetch_in_child(cache: str) -> bool:
    return LocalKafka(Path(cache) / "home", cache).fetch()


def test_concurrent_fetches_run_maven_once(tmp_path: Path, monkeypatch):
    # Parallel test workers each start a broker on one cache: one process fetches, the others
    # wait for it and find the cache complete instead of replacing jars in use.
    import multiprocessing

    bindir = tmp_path / "bin"
    bindir.mkdir()
    runs = tmp_path / "runs.txt"
    mvn = bindir / "mvn"
    mvn.write_text(_FAKE_MVN.format(python=sys.executable, runs=str(runs),
                                    version=kafka_version()))
    mvn.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    cache = tmp_path / "cache"
    with multiprocessing.get_context("spawn").Pool(3) as pool:
        fetched = pool.map(_fetch_in_child, [str(cache)] * 3)
    assert sorted(fetched) == [False, False, True]
    assert runs.read_text().splitlines() == ["run"]
    assert LocalKafka(tmp_path / "home", cache).is_fetched()
