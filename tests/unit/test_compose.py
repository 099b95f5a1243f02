"""Structural checks of the container deployment: Dockerfile, .dockerignore and docker-compose.yml.

No Docker engine runs where fraudstream is developed, so these tests are what keeps the deployment
files honest: they hold the real files against the real settings class, the real click CLI and the
real project layout. Every check reads the files from the repository root; nothing is mocked.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import glob
import json
import re
import shlex
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream.settings import ENV_PREFIX, Settings
from stream.trainer import trainer_group

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
SECURITY_DOC = ROOT / "docs" / "security.md"

SETTINGS_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))
# FRAUDSTREAM_* names that are not a Settings field but that Settings.load() understands.
EXTRA_ENV_NAMES = frozenset({ENV_PREFIX + "CONFIG"})
KAFKA_PASSTHROUGH_PREFIX = ENV_PREFIX + "KAFKA__"
# A placeholder such as FRAUDSTREAM_KAFKA__<PROPERTY> in prose is not a name: the lookahead drops it.
ENV_NAME_RE = re.compile(r"\b" + ENV_PREFIX + r"[A-Z0-9_]+(?![A-Za-z0-9_<])")
# Compose interpolation with a default: ${NAME:-default} or ${NAME-default}.
INTERPOLATION_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*):?-([^}]*)\}")

EXPECTED_SERVICES = ("kafka", "topics", "worker", "trainer", "replay", "prometheus", "grafana")
# Services that run the fraudstream image and keep running: they serve /metrics and the probes.
LONG_RUNNING = ("worker", "trainer")

# Subcommands the deployment files already run although the CLI does not have them yet, each with
# the work that adds it. Everything else a container runs must resolve against the real click CLI.
# Once a planned command exists, test_planned_commands_do_not_exist_yet fails: delete its entry
# here, and the full check (subcommand and every option) applies to it from then on.
PLANNED_COMMANDS: dict[str, str] = {}


# ---------------------------------------------------------------------- parsing helpers
@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(doc, dict), "docker-compose.yml must be a mapping"
    assert isinstance(doc.get("services"), dict), "docker-compose.yml has no services mapping"
    return doc


@dataclasses.dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    stage: int  # index of the FROM this instruction belongs to (-1 before the first FROM)


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped (enough for these checks)."""
    instructions: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # comments may sit between continuation lines
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage += 1
        instructions.append(Instruction(keyword, args.strip(), stage))
    assert not pending, "Dockerfile ends inside a continuation line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8"))


def final_stage(instructions: list[Instruction]) -> list[Instruction]:
    last = max(i.stage for i in instructions)
    return [i for i in instructions if i.stage == last]


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form ENTRYPOINT/CMD/HEALTHCHECK CMD, or None for shell form."""
    try:
        value = json.loads(args)
    except json.JSONDecodeError:
        return None
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def strip_flags(args: str) -> tuple[dict[str, str], str]:
    """Split leading ``--flag=value`` options (COPY, RUN, HEALTHCHECK) from the rest."""
    flags: dict[str, str] = {}
    rest = args
    while rest.startswith("--"):
        token, _, rest = rest.partition(" ")
        name, _, value = token[2:].partition("=")
        flags[name] = value
        rest = rest.lstrip()
    return flags, rest


def dockerfile_argv(instructions: list[Instruction], keyword: str) -> list[str]:
    found = [i for i in final_stage(instructions) if i.keyword == keyword]
    assert found, f"the runtime stage of the Dockerfile has no {keyword}"
    argv = exec_form(found[-1].args)
    assert argv is not None, f"{keyword} must use the exec (JSON array) form: {found[-1].args}"
    return argv


def env_mapping(environment: Any) -> dict[str, str]:
    """A Compose ``environment`` (mapping or list of NAME=value) as a dict of strings."""
    if environment is None:
        return {}
    if isinstance(environment, Mapping):
        return {str(k): "" if v is None else str(v) for k, v in environment.items()}
    out = {}
    for item in environment:
        name, _, value = str(item).partition("=")
        out[name] = value
    return out


def interpolate_defaults(value: str) -> str:
    """Resolve ``${NAME:-default}`` to its default, as Compose does when NAME is unset."""
    return INTERPOLATION_RE.sub(lambda m: m.group(2), value)


def uses_project_image(service: Mapping[str, Any]) -> bool:
    return "build" in service


def service_argv(service: Mapping[str, Any], instructions: list[Instruction]) -> list[str]:
    """The argv a service's container runs: its entrypoint/command over the image's."""

    def as_list(value: Any) -> list[str]:
        return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]

    if "entrypoint" in service:
        entrypoint = as_list(service["entrypoint"])
    elif uses_project_image(service):
        entrypoint = dockerfile_argv(instructions, "ENTRYPOINT")
    else:
        entrypoint = []
    if "command" in service:
        command = as_list(service["command"])
    elif uses_project_image(service) and "entrypoint" not in service:
        command = dockerfile_argv(instructions, "CMD")
    else:
        command = []
    return entrypoint + command


def fraudstream_services(compose: Mapping[str, Any], instructions: list[Instruction]
                         ) -> Iterator[tuple[str, Mapping[str, Any], list[str]]]:
    for name, service in compose["services"].items():
        argv = service_argv(service, instructions)
        if argv and Path(argv[0]).name == "fraudstream":
            yield name, service, argv[1:]


def effective_settings(service: Mapping[str, Any]) -> Settings:
    env = {k: interpolate_defaults(v) for k, v in env_mapping(service.get("environment")).items()}
    return Settings.load(env=env)  # env= keeps the test's own environment out of it


def published_ports(service: Mapping[str, Any]) -> Iterator[tuple[str | None, str]]:
    """(host_ip, spec) for every published port, short or long syntax."""
    for port in service.get("ports", []) or []:
        if isinstance(port, Mapping):
            if port.get("published") is not None:
                yield port.get("host_ip"), str(port)
            continue
        spec = str(port).split("/")[0]
        parts = spec.rsplit(":", 2)
        if len(parts) == 3:
            yield parts[0].strip("[]"), str(port)
        else:
            # HOST:CONTAINER, or a bare CONTAINER port: published on every interface
            yield None, str(port)


def host_ports(service: Mapping[str, Any]) -> set[int]:
    ports = set()
    for port in service.get("ports", []) or []:
        if isinstance(port, Mapping):
            ports.add(int(port["published"]))
        else:
            parts = str(port).split("/")[0].rsplit(":", 2)
            if len(parts) >= 2:
                ports.add(int(parts[-2]))
    return ports


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` as {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, _, address = item.strip().partition("://")
        host, _, port = address.rpartition(":")
        out[name] = (host, int(port))
    return out


# ---------------------------------------------------------------------- compose: services
def test_compose_has_the_three_services(compose):
    missing = [s for s in EXPECTED_SERVICES if s not in compose["services"]]
    assert not missing, f"docker-compose.yml lacks services {missing}"


def test_kafka_is_the_official_apache_image_4x(compose):
    image = compose["services"]["kafka"].get("image", "")
    repo, _, tag = image.partition(":")
    assert repo in ("apache/kafka", "docker.io/apache/kafka"), image
    assert re.fullmatch(r"4\.\d+(\.\d+)?", tag), f"kafka image must be pinned to a 4.x tag: {image}"


def test_kafka_is_a_single_kraft_node_with_replication_one(compose):
    env = env_mapping(compose["services"]["kafka"].get("environment"))
    assert set(env.get("KAFKA_PROCESS_ROLES", "").split(",")) == {"broker", "controller"}
    assert env.get("CLUSTER_ID"), "the apache/kafka image formats KRaft storage with CLUSTER_ID"
    for name in ("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
                 "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"):
        assert env.get(name) == "1", f"{name} must be 1 on a single broker, got {env.get(name)!r}"


def test_kafka_listeners_match_the_clients(compose, dockerfile):
    kafka = compose["services"]["kafka"]
    env = env_mapping(kafka.get("environment"))
    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    for name, (_, port) in advertised.items():
        assert name in bound and bound[name][1] == port, f"advertised {name} is not a listener"

    # In-network clients: every fraudstream service's bootstrap server is an advertised listener.
    for name, service, _ in fraudstream_services(compose, dockerfile):
        bootstrap = effective_settings(service).bootstrap_servers
        assert any(f"{host}:{port}" == bootstrap for host, port in advertised.values()), (
            f"service {name}: bootstrap {bootstrap!r} is not advertised by kafka: {advertised}")

    # Host clients: some advertised listener is a loopback address on a published port.
    published = host_ports(kafka)
    assert any(host in ("127.0.0.1", "localhost") and port in published
               for host, port in advertised.values()), (
        f"no advertised listener reachable from the host: {advertised}, published {published}")


def test_kafka_healthcheck_asks_the_broker(compose):
    kafka = compose["services"]["kafka"]
    test = kafka.get("healthcheck", {}).get("test")
    assert test, "kafka needs a healthcheck for depends_on: service_healthy"
    command = " ".join(test) if isinstance(test, list) else test
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in command
    bootstrap = re.search(r"--bootstrap-server\s+(\S+):(\d+)", command)
    assert bootstrap, command
    bound_ports = {port for _, port in
                   listeners(env_mapping(kafka["environment"])["KAFKA_LISTENERS"]).values()}
    assert int(bootstrap.group(2)) in bound_ports, "healthcheck probes a port kafka does not bind"


def test_startup_order(compose):
    services = compose["services"]
    topics_deps = services["topics"].get("depends_on", {})
    assert topics_deps.get("kafka", {}).get("condition") == "service_healthy"
    worker_deps = services["worker"].get("depends_on", {})
    assert worker_deps.get("topics", {}).get("condition") == "service_completed_successfully"


def test_worker_can_be_scaled_and_stops_gracefully(compose):
    worker = compose["services"]["worker"]
    # A fixed container name or a published port would make `--scale worker=N` fail.
    assert "container_name" not in worker
    assert not worker.get("ports"), "worker replicas cannot share published ports"
    assert worker.get("stop_grace_period") == "30s"


# ---------------------------------------------------------------------- compose: settings
def _all_env_names(compose: Mapping[str, Any]) -> set[str]:
    names = set()
    for service in compose["services"].values():
        names |= set(env_mapping(service.get("environment")))
    # Also every mention anywhere in the files (interpolations, commands, comments, docs).
    for path in (COMPOSE_FILE, DOCKERFILE, DEPLOY_DOC, OPERATIONS_DOC, SECURITY_DOC):
        if path.exists():
            names |= set(ENV_NAME_RE.findall(path.read_text(encoding="utf-8")))
    return {n for n in names if n.startswith(ENV_PREFIX)}


def test_every_fraudstream_env_name_is_a_setting(compose):
    names = _all_env_names(compose)
    assert names, "no FRAUDSTREAM_* variables found: the parsing in this test is broken"
    unknown = sorted(
        n for n in names
        if n not in EXTRA_ENV_NAMES
        and not (n.startswith(KAFKA_PASSTHROUGH_PREFIX) and len(n) > len(KAFKA_PASSTHROUGH_PREFIX))
        and n[len(ENV_PREFIX):].lower() not in SETTINGS_FIELDS
    )
    # Settings.load() silently ignores unknown FRAUDSTREAM_* names, so a typo would go unnoticed.
    assert not unknown, f"not Settings fields: {unknown}"


def test_dockerfile_env_names_are_settings(dockerfile):
    names = set()
    for ins in dockerfile:
        if ins.keyword == "ENV":
            names |= {m.split("=")[0] for m in shlex.split(ins.args) if "=" in m}
    for name in names:
        if name.startswith(ENV_PREFIX):
            assert name[len(ENV_PREFIX):].lower() in SETTINGS_FIELDS, name


@pytest.mark.parametrize("name", ["topics", "worker", "trainer", "replay"])
def test_service_settings_load_and_validate(compose, name):
    # Coerces and validates every value the way the real process will (bad ints, guarantees...).
    settings = effective_settings(compose["services"][name])
    assert settings.replication_factor == 1, "one broker cannot hold more than one replica"


@pytest.mark.parametrize("name", ["worker", "trainer", "replay"])
def test_services_agree_on_the_topology(compose, name):
    topics = effective_settings(compose["services"]["topics"])
    other = effective_settings(compose["services"][name])
    for field in ("bootstrap_servers", "topic_events", "topic_labels", "topic_scores",
                  "topic_dead_letter", "partitions", "replication_factor"):
        assert getattr(topics, field) == getattr(other, field), field


def test_worker_replicas_get_distinct_instance_ids(compose):
    # Every replica of `--scale worker=N` shares this environment; a fixed instance id would give
    # them one transactional id, and the brokers would fence all but one.
    for name in ("topics", "worker", "replay"):
        assert effective_settings(compose["services"][name]).instance_id is None, name


def test_two_workers_and_a_trainer_in_its_own_group(compose):
    services = compose["services"]
    assert services["worker"].get("deploy", {}).get("replicas") == 2
    worker = effective_settings(services["worker"])
    trainer = effective_settings(services["trainer"])
    # Same application (group_id); the trainer consumes in its own group derived from it.
    assert trainer.group_id == worker.group_id
    assert trainer_group(trainer) != worker.group_id, "the trainer must not join the workers' group"
    assert trainer.instance_id, "one trainer: a fixed instance id fences a restarted predecessor"
    assert "deploy" not in services["trainer"] or services["trainer"]["deploy"].get("replicas", 1) == 1


def test_replay_is_an_opt_in_profile_reading_a_mounted_log(compose, dockerfile):
    replay = compose["services"]["replay"]
    assert replay.get("profiles") == ["replay"], "`docker compose up` must not start a replay"
    assert replay.get("restart") == "no"
    args = dict((n, a) for n, _, a in fraudstream_services(compose, dockerfile))["replay"]
    assert args[args.index("--speed") + 1] == "max"
    log = Path(args[1])
    mounts = [interpolate_defaults(str(v)).split(":") for v in replay.get("volumes", [])]
    assert any(len(m) == 3 and Path(m[1]) in log.parents and m[2] == "ro" for m in mounts), (
        f"replay log {log} is not on a read-only mount: {mounts}")
    assert replay["depends_on"]["topics"]["condition"] == "service_completed_successfully"


def test_every_dependency_is_a_service(compose):
    services = compose["services"]
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        for dep in (deps if isinstance(deps, list) else deps.keys()):
            assert dep in services, f"service {name} depends on unknown service {dep}"


def test_third_party_images_are_pinned(compose):
    for name, service in compose["services"].items():
        if uses_project_image(service):
            continue
        image = service.get("image", "")
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, (
            f"service {name}: pin the image to a version, got {image!r}")


# ---------------------------------------------------------------------- compose: metrics, health
def _metrics_conventions():
    from stream import metrics_names

    return metrics_names


@pytest.mark.parametrize("name", LONG_RUNNING)
def test_long_running_services_serve_metrics_and_health(compose, name):
    names = _metrics_conventions()
    service = compose["services"][name]
    settings = effective_settings(service)
    assert settings.metrics_host == "0.0.0.0", (
        f"{name}: metrics bound to {settings.metrics_host} are unreachable from Prometheus")
    assert settings.metrics_port == names.DEFAULT_METRICS_PORT
    exposed = {int(str(p).split("/")[0]) for p in service.get("expose", [])}
    assert settings.metrics_port in exposed, f"{name}: expose {settings.metrics_port}"
    test = service.get("healthcheck", {}).get("test")
    assert test and test[0] == "CMD", f"{name}: needs an exec-form healthcheck"
    url = re.search(r"http://(127\.0\.0\.1|localhost):(\d+)(/\S*?)['\"]", " ".join(test))
    assert url, f"{name}: healthcheck does not probe the health endpoint: {test}"
    assert int(url.group(2)) == settings.metrics_port
    assert url.group(3) in (names.LIVENESS_PATH, names.READINESS_PATH), url.group(3)
    assert service.get("stop_grace_period") == "30s"


def test_prometheus_and_grafana_mount_the_repository_config(compose):
    for name, wanted in (("prometheus", ["deploy/prometheus/prometheus.yml"]),
                         ("grafana", ["deploy/grafana/provisioning", "deploy/grafana/dashboards"])):
        sources = [str(v).split(":")[0] for v in compose["services"][name].get("volumes", [])]
        for path in wanted:
            assert f"./{path}" in sources, f"{name} does not mount {path}: {sources}"
            assert (ROOT / path).exists(), f"{name} mounts {path}, which does not exist"
    command = " ".join(compose["services"]["prometheus"].get("command", []))
    assert "--config.file=/etc/prometheus/prometheus.yml" in command


def test_worker_settings_from_the_brief(compose):
    env = env_mapping(compose["services"]["worker"].get("environment"))
    assert env.get("FRAUDSTREAM_BOOTSTRAP_SERVERS") == "kafka:9092"
    assert env.get("FRAUDSTREAM_STATE_DIR") == "/var/lib/fraudstream/state"


# ---------------------------------------------------------------------- compose: CLI commands
def _cli_main():
    from stream.cli import main  # lands with the CLI; until then these tests fail on purpose

    return main


def _subcommands(group: Any) -> Mapping[str, Any]:
    return getattr(group, "commands", {}) or {}


def _option_names(command: Any) -> set[str]:
    names = set()
    for param in getattr(command, "params", []):
        names |= set(getattr(param, "opts", [])) | set(getattr(param, "secondary_opts", []))
    return names


def resolve_cli(main: Any, args: list[str]) -> tuple[list[str], Any]:
    """Walk ``main.commands`` (nested groups) along ``args``; return the path and the leaf."""
    import click

    command, path = main, []
    options = _option_names(main)
    rest = list(args)
    while isinstance(command, click.Group):
        while rest and rest[0].startswith("-"):
            flag = rest.pop(0).split("=")[0]
            assert flag in options, f"fraudstream {' '.join(path)}: unknown option {flag}"
        if not rest:
            break
        name = rest.pop(0)
        sub = _subcommands(command)
        assert name in sub, (f"fraudstream {' '.join(path + [name])}: no such command "
                             f"(have {sorted(sub)})")
        command, path = sub[name], path + [name]
        options |= _option_names(command)
    for token in rest:
        if token.startswith("-") and token != "-":
            assert token.split("=")[0] in options, (
                f"fraudstream {' '.join(path)}: unknown option {token}")
    return path, command


def check_command(main: Any, args: list[str]) -> tuple[list[str], Any]:
    """``resolve_cli`` for real commands; a planned one (PLANNED_COMMANDS) resolves to None.

    A planned command's options are unknown until it exists, so it must be run bare."""
    first = next((a for a in args if not a.startswith("-")), None)
    if first in PLANNED_COMMANDS and first not in _subcommands(main):
        assert args == [first], (f"planned command `fraudstream {first}` is run with {args[1:]}: "
                                 "options cannot be checked before the command exists")
        return [first], None
    return resolve_cli(main, args)


def test_planned_commands_do_not_exist_yet():
    main = _cli_main()
    landed = sorted(set(PLANNED_COMMANDS) & set(_subcommands(main)))
    assert not landed, (f"{landed} now exist in the CLI: remove them from PLANNED_COMMANDS so the "
                        "deployment files are checked against their real options")


def test_resolve_cli_rejects_unknown_commands():
    main = _cli_main()
    with pytest.raises(AssertionError, match="no such command"):
        check_command(main, ["no-such-command"])
    with pytest.raises(AssertionError, match="unknown option"):
        check_command(main, ["worker", "--no-such-option"])
    with pytest.raises(AssertionError, match="unknown option"):
        check_command(main, ["trainer", "--no-such-option"])


def test_every_fraudstream_command_is_a_real_subcommand(compose, dockerfile):
    import click

    main = _cli_main()
    checked = []
    for name, _, args in fraudstream_services(compose, dockerfile):
        path, command = check_command(main, args)
        assert path, f"service {name} runs bare `fraudstream` with no subcommand"
        assert not isinstance(command, click.Group) or command.invoke_without_command, (
            f"service {name}: `fraudstream {' '.join(path)}` is a group, not a command")
        checked.append((name, path))
    assert {n for n, _ in checked} >= {"topics", "worker", "trainer", "replay"}, checked
    assert dict(checked)["topics"] == ["topics", "create"]
    assert dict(checked)["worker"] == ["worker"]
    assert dict(checked)["trainer"] == ["trainer"]
    assert dict(checked)["replay"] == ["replay"]


def test_dockerfile_default_command_and_healthcheck_are_real(dockerfile):
    import click

    main = _cli_main()
    cmd = dockerfile_argv(dockerfile, "CMD")
    _, command = resolve_cli(main, cmd)
    assert not isinstance(command, click.Group), f"CMD {cmd} names a group"
    health = _healthcheck_argv(dockerfile)
    assert Path(health[0]).name == "fraudstream", health
    resolve_cli(main, health[1:])  # e.g. --version must be an option the CLI really has
    from click.testing import CliRunner

    result = CliRunner().invoke(main, health[1:], env={})
    assert result.exit_code == 0, f"healthcheck {health} fails: {result.output}"


# ---------------------------------------------------------------------- compose: ports, volumes
def test_published_ports_bind_to_loopback_only(compose):
    for name, service in compose["services"].items():
        for host_ip, spec in published_ports(service):
            assert host_ip in ("127.0.0.1", "::1"), (
                f"service {name} publishes {spec} beyond loopback")


def test_worker_state_dir_is_on_a_named_volume(compose):
    worker = compose["services"]["worker"]
    state_dir = Path(effective_settings(worker).state_dir)
    assert state_dir.is_absolute(), f"state_dir {state_dir} must be absolute in a container"
    declared = set((compose.get("volumes") or {}).keys())
    for volume in worker.get("volumes", []) or []:
        if isinstance(volume, Mapping):
            source, target = volume.get("source"), volume.get("target")
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.split(":")[0]
        if target and (state_dir == Path(target) or Path(target) in state_dir.parents):
            assert source in declared, f"state volume {source!r} is not a declared named volume"
            break
    else:
        pytest.fail(f"no worker volume holds state_dir {state_dir}")


def test_kafka_log_dir_is_on_a_volume(compose):
    kafka = compose["services"]["kafka"]
    log_dir = env_mapping(kafka.get("environment")).get("KAFKA_LOG_DIRS")
    assert log_dir, "set KAFKA_LOG_DIRS: the image's default lives in /tmp"
    targets = {str(v).split(":")[1] for v in kafka.get("volumes", []) if not isinstance(v, Mapping)}
    assert log_dir in targets, f"kafka log dir {log_dir} is not on a volume ({targets})"


def test_build_context_points_at_the_dockerfile(compose):
    built = {n: s["build"] for n, s in compose["services"].items() if "build" in s}
    assert {"topics", "worker", "trainer", "replay"} <= set(built), (
        f"services built from the Dockerfile: {sorted(built)}")
    for name, build in built.items():
        if isinstance(build, str):
            context, dockerfile = build, "Dockerfile"
        else:
            context, dockerfile = build.get("context", "."), build.get("dockerfile", "Dockerfile")
        path = (COMPOSE_FILE.parent / context / dockerfile).resolve()
        assert path == DOCKERFILE.resolve(), f"service {name} builds {path}, not {DOCKERFILE}"
    images = {s.get("image") for s in compose["services"].values() if "build" in s}
    assert len(images) == 1, f"services built from the Dockerfile must share one image: {images}"


# ---------------------------------------------------------------------- Dockerfile
def test_dockerfile_is_multi_stage(dockerfile):
    froms = [i for i in dockerfile if i.keyword == "FROM"]
    assert len(froms) >= 2, "expected a builder stage and a runtime stage"
    assert froms[-1].args.split()[0] == "python:3.11-slim", froms[-1].args
    runtime = froms[-1].stage
    builder_runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN" and i.stage < runtime)
    assert "pip wheel" in builder_runs, "a builder stage must build wheels with `pip wheel`"
    runtime_runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN" and i.stage == runtime)
    assert "--no-index" in runtime_runs, "the runtime stage must install only the built wheels"


def test_dockerfile_runs_as_non_root_uid_10001(dockerfile):
    users = [i for i in final_stage(dockerfile) if i.keyword == "USER"]
    assert users, "the runtime stage has no USER: it would run as root"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0"), users[-1].args
    assert user in ("fraudstream", "10001"), users[-1].args
    runs = " ".join(i.args for i in final_stage(dockerfile) if i.keyword == "RUN")
    assert re.search(r"useradd\b.*--uid 10001\b.*\bfraudstream\b", runs), "user fraudstream uid 10001"


def test_dockerfile_entrypoint_cmd_workdir_volume(dockerfile):
    assert dockerfile_argv(dockerfile, "ENTRYPOINT") == ["fraudstream"]
    assert dockerfile_argv(dockerfile, "CMD") == ["worker"]
    stage = final_stage(dockerfile)
    assert [i.args for i in stage if i.keyword == "WORKDIR"][-1] == "/app"
    volumes = set()
    for ins in stage:
        if ins.keyword == "VOLUME":
            volumes |= set(exec_form(ins.args) or ins.args.split())
    assert "/var/lib/fraudstream" in volumes, volumes
    env = {}
    for ins in stage:
        if ins.keyword == "ENV":
            env.update(m.split("=", 1) for m in shlex.split(ins.args) if "=" in m)
    state_dir = Path(env.get(ENV_PREFIX + "STATE_DIR", Settings().state_dir))
    # The default state_dir is relative to WORKDIR, which is not on the volume.
    assert any(state_dir == Path(v) or Path(v) in state_dir.parents for v in volumes), (
        f"image state_dir {state_dir} is not on a declared VOLUME {volumes}")


def test_dockerfile_exposes_the_metrics_port_and_binds_it(dockerfile):
    names = _metrics_conventions()
    stage = final_stage(dockerfile)
    exposed = {int(p.split("/")[0]) for i in stage if i.keyword == "EXPOSE" for p in i.args.split()}
    assert names.DEFAULT_METRICS_PORT in exposed, exposed
    env = {}
    for ins in stage:
        if ins.keyword == "ENV":
            env.update(m.split("=", 1) for m in shlex.split(ins.args) if "=" in m)
    assert env.get(ENV_PREFIX + "METRICS_HOST") == "0.0.0.0"
    assert Settings().metrics_port == names.DEFAULT_METRICS_PORT


def _healthcheck_argv(instructions: list[Instruction]) -> list[str]:
    checks = [i for i in final_stage(instructions) if i.keyword == "HEALTHCHECK"]
    assert checks, "the runtime stage has no HEALTHCHECK"
    _, rest = strip_flags(checks[-1].args)
    keyword, _, command = rest.partition(" ")
    assert keyword.upper() == "CMD", f"HEALTHCHECK must run a command: {checks[-1].args}"
    return exec_form(command) or shlex.split(command)


def test_dockerfile_has_a_healthcheck(dockerfile):
    argv = _healthcheck_argv(dockerfile)
    assert Path(argv[0]).name == "fraudstream", argv


def test_dockerfile_copies_every_package_and_nothing_missing(dockerfile):
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    includes = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {p.name for p in ROOT.iterdir()
                if (p / "__init__.py").exists() and any(fnmatch.fnmatch(p.name, pat) for pat in includes)}
    assert packages, "no packages found from pyproject's packages.find include"

    ignored = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")]
    copied: set[str] = set()
    for ins in dockerfile:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        flags, rest = strip_flags(ins.args)
        if "from" in flags:
            continue
        sources = (exec_form(rest) or rest.split())[:-1]
        for source in sources:
            matches = glob.glob(source, root_dir=ROOT)
            if not glob.has_magic(source):
                # A missing literal source fails the build; an empty wildcard is allowed.
                assert matches, f"Dockerfile copies {source!r}, which is not in the repository"
            for match in matches:
                assert not any(fnmatch.fnmatch(match, pat) for pat in ignored), (
                    f"Dockerfile copies {match!r} but .dockerignore excludes it")
                copied.add(Path(match).parts[0])
    missing = packages - copied
    assert not missing, f"packages in pyproject.toml the image would not contain: {sorted(missing)}"
    assert "pyproject.toml" in copied


def test_dockerignore_keeps_local_state_out():
    ignored = {line.strip().rstrip("/") for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
               if line.strip() and not line.startswith("#")}
    for name in (".venv", ".cache", ".fraudstream", ".git", ".pytest_cache", ".hypothesis"):
        assert name in ignored, f".dockerignore must exclude {name}"
