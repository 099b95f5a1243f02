"""``fraudstream models``: list, inspect, promote, export and import model snapshots.

Everything here reads and writes the compacted models topic (:mod:`stream.modelstore`). Writes are
one transaction each (``transactional.id = <group_id>-models-cli``), so a promotion that moves the
challenger to ``role/global`` and tombstones ``role/challenger`` becomes visible at once. Workers
follow the topic and swap models without pausing; a running trainer adopts a promoted or imported
global model and continues learning from it.

Snapshots are pickles: whoever can write the models topic can run code in every worker and in the
trainer. Restrict writes with Kafka ACLs (docs/security.md), and import only files you made.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import click

from stream.exceptions import FraudstreamError

__all__ = ["models"]

_REFS = "VERSION, 'global' or 'challenger'"


def _ctx_settings(ctx: click.Context):
    from stream.cli import _settings, _setup_logging

    s = _settings(ctx)
    _setup_logging(s)
    return s


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _roles(latest: dict) -> dict[str, str]:
    """role -> version for the roles that point at something."""
    return {r.role: r.version for r in latest.values()
            if r.role is not None and r.data is not None and r.version is not None}


def _resolve(latest: dict, ref: str):
    key = f"role/{ref}" if ref in ("global", "challenger") else f"version/{ref}"
    rec = latest.get(key)
    if rec is None or rec.data is None:
        known = sorted(k.split("/", 1)[1] for k, r in latest.items()
                       if k.startswith("version/") and r.data is not None)
        what = f"no {ref} model" if key.startswith("role/") else f"no version {ref!r}"
        raise FraudstreamError(f"{what} on the models topic; versions: "
                               f"{', '.join(known) or 'none yet'}")
    return rec


class _Txn:
    """One transaction on the models topic."""

    def __init__(self, settings) -> None:
        from confluent_kafka import Producer

        from stream.modelstore import snapshot_producer_config

        self.settings = settings
        self.producer = Producer(snapshot_producer_config(
            settings, **{"transactional.id": f"{settings.group_id}-models-cli"}))

    def __enter__(self):
        from confluent_kafka import KafkaException

        try:
            self.producer.init_transactions(30)
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise FraudstreamError(f"cannot write the models topic: {exc.args[0].str()}") \
                from None
        return self.producer

    def __exit__(self, exc_type, exc, tb) -> None:
        from confluent_kafka import KafkaException

        try:
            if exc_type is None:
                self.producer.commit_transaction(60)
            else:
                self.producer.abort_transaction(30)
        except KafkaException as err:
            raise FraudstreamError(f"writing the models topic failed: {err.args[0].str()}") \
                from None


def _version_row(rec, roles: dict[str, str]) -> dict[str, Any]:
    return {"version": rec.version, "spec": rec.spec, "n_learned": rec.n_learned,
            "published_at": rec.published_at,
            "roles": sorted(r for r, v in roles.items() if v == rec.version)}


@click.group("models")
def models() -> None:
    """Model versions on the models topic: list, show, promote, export, import."""


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: versions and roles.")
@click.pass_context
def list_(ctx: click.Context, as_json: bool) -> None:
    """Every published version with its spec, examples learned, time and roles."""
    from stream import wire
    from stream.modelstore import read_models

    latest = read_models(_ctx_settings(ctx))
    roles = _roles(latest)
    rows = [_version_row(r, roles)
            for r in sorted(latest.values(), key=lambda r: r.offset)
            if r.key.startswith("version/") and r.data is not None]
    if as_json:
        click.echo(wire.dumps({"versions": rows, "roles": roles}).decode())
        return
    if not rows:
        click.echo("no model versions published yet", err=True)
        return
    width = max(len("VERSION"), *(len(r["version"] or "") for r in rows))
    click.echo(f"{'VERSION':<{width}}  {'SPEC':<12} {'LEARNED':>9}  {'PUBLISHED (UTC)':<19}  ROLES")
    for r in rows:
        n = "-" if r["n_learned"] is None else str(r["n_learned"])
        click.echo(f"{r['version']:<{width}}  {r['spec'] or '-':<12} {n:>9}  "
                   f"{_when(r['published_at']):<19}  {','.join(r['roles'])}")


def _details(data: bytes) -> dict[str, Any]:
    from online_models.registry import get_spec
    from online_models.scorer import GlobalModel

    g = GlobalModel.from_bytes(data)
    cal = g.calibrator
    return {"model_class": type(g.model).__name__,
            "spec_version": g.model.version,
            "description": get_spec(g.model.name).description,
            "snapshot_version": g.version,
            "snapshot_n_learned": g.n_learned,
            "calibrator": {"fitted": cal.fitted, "a": round(cal.a, 6), "b": round(cal.b, 6),
                           "labels": cal.n, "positives": cal.n_pos},
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


@models.command("show")
@click.argument("ref", metavar="VERSION|global|challenger")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def show(ctx: click.Context, ref: str, as_json: bool) -> None:
    """Metadata of one version and what its snapshot holds."""
    from stream import wire
    from stream.modelstore import read_models

    latest = read_models(_ctx_settings(ctx))
    rec = _resolve(latest, ref)
    out = _version_row(rec, _roles(latest))
    out.update(_details(rec.data))
    if as_json:
        click.echo(wire.dumps(out).decode())
        return
    out["published_at"] = f"{_when(out['published_at'])} UTC ({out['published_at']})"
    out["roles"] = ", ".join(out["roles"]) or "-"
    cal = out.pop("calibrator")
    out["calibrator"] = (f"fitted={cal['fitted']} a={cal['a']} b={cal['b']} "
                         f"labels={cal['labels']} positives={cal['positives']}")
    for k, v in out.items():
        click.echo(f"{k + ':':<20}{v}")


@models.command("promote")
@click.argument("version", required=False)
@click.option("--challenger", "from_challenger", is_flag=True,
              help="The current challenger becomes the global model (and stops being challenger).")
@click.pass_context
def promote(ctx: click.Context, version: str | None, from_challenger: bool) -> None:
    """Make VERSION (or, with --challenger, the challenger) the global model."""
    from stream.modelstore import ROLE_CHALLENGER, ROLE_GLOBAL, clear_role, read_models, set_role

    if bool(version) == from_challenger:
        raise click.UsageError("give a VERSION or --challenger (one of them)")
    s = _ctx_settings(ctx)
    latest = read_models(s)
    before = _roles(latest).get(ROLE_GLOBAL)
    rec = _resolve(latest, ROLE_CHALLENGER if from_challenger else version)
    with _Txn(s) as producer:
        set_role(producer, s, rec, ROLE_GLOBAL)
        if from_challenger:
            clear_role(producer, s, ROLE_CHALLENGER)
    click.echo(f"global: {rec.version} (was {before or 'none'})"
               + ("; challenger cleared" if from_challenger else ""))


@models.command("clear-challenger")
@click.pass_context
def clear_challenger(ctx: click.Context) -> None:
    """Stop the shadow run: tombstone role/challenger (its versions stay listed)."""
    from stream.modelstore import ROLE_CHALLENGER, clear_role, read_models

    s = _ctx_settings(ctx)
    rec = _resolve(read_models(s), ROLE_CHALLENGER)
    with _Txn(s) as producer:
        clear_role(producer, s, ROLE_CHALLENGER)
    click.echo(f"challenger {rec.version} cleared")


@models.command("export")
@click.argument("ref", metavar="VERSION|global|challenger")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def export(ctx: click.Context, ref: str, file: Path) -> None:
    """Write a version's snapshot bytes to FILE ('-' for stdout)."""
    from stream.modelstore import read_models

    rec = _resolve(read_models(_ctx_settings(ctx)), ref)
    if str(file) == "-":
        sys.stdout.buffer.write(rec.data)
        sys.stdout.buffer.flush()
        return
    file.write_bytes(rec.data)
    click.echo(f"exported {rec.version} ({len(rec.data)} bytes) to {file}", err=True)


@models.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--role", type=click.Choice(["global", "challenger", "none"]), default="none",
              show_default=True, help="Also point this role at it ('challenger' starts a shadow "
                                      "run; 'global' serves it).")
@click.option("--version", "label", help="Publish under this version label instead of the one "
                                         "in the snapshot.")
@click.pass_context
def import_(ctx: click.Context, file: Path, role: str, label: str | None) -> None:
    """Publish a snapshot file (from `models export`) as a version."""
    from online_models.exceptions import ModelError
    from online_models.scorer import GlobalModel
    from stream.modelstore import publish_model, read_models, set_role

    data = file.read_bytes()
    try:
        g = GlobalModel.from_bytes(data)  # the only check before any worker would load it
    except ModelError as exc:
        raise FraudstreamError(f"{file} is not a usable fraudstream model snapshot: {exc}") \
            from None
    if label is not None:
        if not label.strip() or "/" in label:
            raise click.BadParameter("must be non-empty and contain no '/'", param_hint="--version")
        g.set_version(label)
        data = g.to_bytes()
    version = g.version
    s = _ctx_settings(ctx)
    existing = read_models(s).get(f"version/{version}")
    if existing is not None and existing.data is not None and existing.data != data:
        raise FraudstreamError(f"version {version} already exists on the models topic with "
                               "different content; import it under another name with --version")
    with _Txn(s) as producer:
        if existing is not None and existing.data == data:
            if role != "none":
                set_role(producer, s, existing, role)
        else:
            publish_model(producer, s, data, version, g.model.name, g.n_learned,
                          role=None if role == "none" else role)
    click.echo(f"imported {version} ({g.model.name}, {g.n_learned} learned)"
               + (f" as {role}" if role != "none" else ""))
