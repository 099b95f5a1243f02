"""One virtualenv per peer under ``.cache/bench-venvs/<name>/``, so peers' pins never meet ours.

A venv is reused while its stamp file lists the same requirements; ``refresh=True`` rebuilds it
(that is how "latest from PyPI" is picked up again). Contenders with ``requirements=None`` run in
the project's own virtualenv, i.e. the python running the harness.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from bench.contenders import Contender

__all__ = ["VenvError", "ensure_venv", "venv_python", "probe_versions"]

_STAMP = ".bench-requirements"


class VenvError(RuntimeError):
    """A peer's virtualenv could not be created or its requirements installed."""


def venv_python(root: Path, contender: Contender) -> Path:
    if contender.requirements is None:
        return Path(sys.executable)
    return root / contender.venv_name / "bin" / "python"


def ensure_venv(root: Path, contender: Contender, refresh: bool = False, log=print) -> Path:
    """The contender's python, creating and filling its venv first when needed."""
    python = venv_python(root, contender)
    if contender.requirements is None:
        return python
    home = root / contender.venv_name
    wanted = "\n".join(contender.requirements) + "\n"
    stamp = home / _STAMP
    if not refresh and python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if home.exists():
        shutil.rmtree(home)
    log(f"creating {home} with {' '.join(contender.requirements)}")
    base = getattr(sys, "_base_executable", sys.executable)
    _run([base, "-m", "venv", str(home)], f"python -m venv {home}")
    _run([str(python), "-m", "pip", "install", "--quiet", "--upgrade", "pip"], "upgrading pip")
    _run([str(python), "-m", "pip", "install", "--quiet", *contender.requirements],
         f"pip install {' '.join(contender.requirements)}")
    stamp.write_text(wanted)
    return python


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise VenvError(f"{what} failed (exit {proc.returncode}):\n{tail}")


_PROBE = r"""
import importlib.metadata as m, json, platform, sys
out = {"python": platform.python_version()}
for d in sys.argv[1:]:
    try:
        out[d] = m.version(d)
    except m.PackageNotFoundError:
        out[d] = None
try:
    import confluent_kafka
    out["librdkafka"] = confluent_kafka.libversion()[0]
except ImportError:
    pass
print(json.dumps(out))
"""


def probe_versions(python: Path, dists: tuple[str, ...]) -> dict[str, str | None]:
    """Versions of python, ``dists`` and librdkafka as seen by ``python``."""
    proc = subprocess.run([str(python), "-c", _PROBE, *dists], capture_output=True, text=True,
                          timeout=120)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "probe failed"}
    return json.loads(proc.stdout)
