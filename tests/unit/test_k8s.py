"""Structural checks of the Kubernetes manifests under deploy/k8s (kustomize base and overlays).

No cluster runs where fraudstream is developed and kustomize is not installed, so this module
renders each kustomization itself (the subset of kustomize the files use; any other field fails
the test instead of being silently ignored), then holds every rendered object against the
Kubernetes JSON schemas (the ``kubernetes-validate`` package, when installed), the Settings class,
the real click CLI, the Dockerfile and the metric/health conventions in stream/metrics_names.py.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream import metrics_names
from stream.settings import ENV_PREFIX, Settings
from stream.trainer import trainer_group
from tests.unit.test_compose import (DOCKERFILE, _cli_main, check_command, final_stage,
                                     parse_dockerfile)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUSTOMIZATIONS = ["base", "overlays/example"]

SETTINGS_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings))
KAFKA_PASSTHROUGH_PREFIX = ENV_PREFIX + "KAFKA__"
# Secrets the manifests reference but do not create: made by the cluster's certificate tooling
# (cert-manager, the Kafka operator's cluster CA). docs/security.md says how to create them.
EXTERNAL_SECRETS = frozenset({"fraudstream-kafka-ca"})
# Containers that keep running and so must serve metrics and the health endpoints.
LONG_RUNNING = {"worker", "trainer"}
IMAGE_REPO = "fraudstream"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "DaemonSet")
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PersistentVolume",
                  "StorageClass", "CustomResourceDefinition"}
KEDA_API = "keda.sh/v1alpha1"


# ---------------------------------------------------------------------- a small kustomize
SUPPORTED_KUSTOMIZE_FIELDS = {"apiVersion", "kind", "resources", "namespace", "images", "patches"}
# Strategic-merge keys of the lists the patches touch (Kubernetes' patchMergeKey); every other list
# is replaced as a whole, as kustomize does.
MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
              "volumeMounts": "mountPath", "ports": "containerPort"}


def strategic_merge(base: Any, patch: Any, field: str | None = None) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        assert not any(k.startswith("$") for k in patch), f"patch directives unsupported: {patch}"
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = strategic_merge(out[key], value, key)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and field in MERGE_KEYS:
        key = MERGE_KEYS[field]
        out = [copy.deepcopy(item) for item in base]
        for item in patch:
            match = [i for i, old in enumerate(out) if old.get(key) == item.get(key)]
            if match:
                out[match[0]] = strategic_merge(out[match[0]], item, None)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def load_yaml_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def kustomize_build(directory: Path) -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unsupported = set(kustomization) - SUPPORTED_KUSTOMIZE_FIELDS
    assert not unsupported, (f"{directory}: kustomization uses {sorted(unsupported)}, which the "
                             "renderer in test_k8s.py does not implement: extend it first")
    docs: list[dict[str, Any]] = []
    for resource in kustomization.get("resources", []):
        path = (directory / resource).resolve()
        docs.extend(kustomize_build(path) if path.is_dir() else load_yaml_docs(path))
    for patch in kustomization.get("patches", []):
        assert set(patch) == {"path"}, f"only file patches are supported: {patch}"
        for doc in load_yaml_docs(directory / patch["path"]):
            targets = [i for i, d in enumerate(docs)
                       if (d["kind"], d["metadata"]["name"]) == (doc["kind"], doc["metadata"]["name"])]
            assert len(targets) == 1, f"patch {patch['path']} matches {len(targets)} objects"
            docs[targets[0]] = strategic_merge(docs[targets[0]], doc)
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in pod_containers(doc):
                name, tag = split_image(container["image"])
                if name == image["name"]:
                    container["image"] = (f"{image.get('newName', name)}:"
                                          f"{image.get('newTag', tag)}").rstrip(":")
    if "namespace" in kustomization:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def split_image(image: str) -> tuple[str, str]:
    name, sep, tag = image.rpartition(":")
    if not sep or "/" in tag:
        return image, ""
    return name, tag


# ---------------------------------------------------------------------- helpers over objects
def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] in WORKLOAD_KINDS:
        return doc["spec"]["template"]["spec"]
    return None


def pod_containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(doc)
    return [] if spec is None else spec.get("containers", []) + spec.get("initContainers", [])


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        for container in pod_containers(doc):
            yield doc, container


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    data.update({k: str(v) for k, v in (secret.get("stringData") or {}).items()})
    return data


def container_env(docs: list[dict[str, Any]], doc: dict[str, Any],
                  container: dict[str, Any]) -> dict[str, str]:
    """The environment the container starts with: envFrom sources, then env entries (which win)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(one(docs, "ConfigMap", source["configMapRef"]["name"])["data"])
        elif "secretRef" in source:
            env.update(secret_data(one(docs, "Secret", source["secretRef"]["name"])))
        else:
            pytest.fail(f"unsupported envFrom {source}")
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            ref = entry["valueFrom"]
            if ref.get("fieldRef", {}).get("fieldPath") == "metadata.name":
                env[entry["name"]] = f"{doc['metadata']['name']}-0"  # a pod name
            elif "secretKeyRef" in ref:
                key = ref["secretKeyRef"]
                env[entry["name"]] = secret_data(one(docs, "Secret", key["name"]))[key["key"]]
            else:
                pytest.fail(f"unsupported valueFrom {ref}")
    return env


def container_settings(docs, doc, container) -> Settings:
    return Settings.load(env=container_env(docs, doc, container))


def mounts_covering(doc: dict[str, Any], container: dict[str, Any], path: str) -> dict[str, Any]:
    """The volume (pod volume or claim template) mounted at or above ``path``, or fail."""
    target = Path(path)
    best = None
    for mount in container.get("volumeMounts", []):
        mount_path = Path(mount["mountPath"])
        if mount_path == target or mount_path in target.parents:
            if best is None or len(mount_path.parts) > len(Path(best["mountPath"]).parts):
                best = mount
    assert best, f"{container['name']}: nothing is mounted at {path}"
    volumes = {v["name"]: v for v in pod_spec(doc).get("volumes", [])}
    claims = {c["metadata"]["name"]: {"name": c["metadata"]["name"], "persistentVolumeClaim": c}
              for c in doc["spec"].get("volumeClaimTemplates", [])}
    volume = volumes.get(best["name"]) or claims.get(best["name"])
    assert volume, f"{container['name']}: mount {best['name']} has no volume"
    return volume


def labels_match(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request) -> list[dict[str, Any]]:
    return kustomize_build(K8S / request.param)


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize_build(K8S / "base")


@pytest.fixture(scope="module")
def overlay() -> list[dict[str, Any]]:
    return kustomize_build(K8S / "overlays" / "example")


# ---------------------------------------------------------------------- the files
def test_every_manifest_file_is_used():
    for name in KUSTOMIZATIONS:
        directory = K8S / name
        kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
        used = set(kustomization.get("resources", [])) | {
            p["path"] for p in kustomization.get("patches", [])}
        files = {p.name for p in directory.glob("*.yaml")} - {"kustomization.yaml"}
        assert files <= used, f"{name}: files not in the kustomization: {sorted(files - used)}"


def test_renderer_merges_like_strategic_merge_patch():
    base_doc = {"spec": {"containers": [{"name": "a", "image": "x", "env": [{"name": "A", "value": "1"}]}],
                         "volumes": [{"name": "v", "emptyDir": {}}], "args": ["1", "2"]}}
    patch = {"spec": {"containers": [{"name": "a", "env": [{"name": "B", "value": "2"}]}],
                      "volumes": [{"name": "w", "secret": {"secretName": "s"}}], "args": ["3"]}}
    merged = strategic_merge(base_doc, patch)
    assert merged["spec"]["containers"][0]["image"] == "x"
    assert [e["name"] for e in merged["spec"]["containers"][0]["env"]] == ["A", "B"]
    assert [v["name"] for v in merged["spec"]["volumes"]] == ["v", "w"]
    assert merged["spec"]["args"] == ["3"], "lists without a merge key are replaced"
    assert base_doc["spec"]["args"] == ["1", "2"], "the base is not modified"


def test_objects_have_identity_and_labels(rendered):
    seen = set()
    for doc in rendered:
        assert doc.get("apiVersion") and doc.get("kind"), doc
        name = doc.get("metadata", {}).get("name")
        assert name and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
        assert (doc["kind"], name) not in seen, f"duplicate {doc['kind']} {name}"
        seen.add((doc["kind"], name))
        assert doc["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "fraudstream", (
            f"{doc['kind']} {name} lacks app.kubernetes.io/part-of=fraudstream")


def test_the_issue_asks_for_these_objects(rendered):
    one(rendered, "StatefulSet", "fraudstream-worker")
    one(rendered, "Deployment", "fraudstream-trainer")
    one(rendered, "Job", "fraudstream-topics")
    one(rendered, "Service", "fraudstream-worker")
    one(rendered, "Service", "fraudstream-trainer")
    one(rendered, "PodDisruptionBudget", "fraudstream-worker")
    one(rendered, "ScaledObject", "fraudstream-worker")
    one(rendered, "ConfigMap", "fraudstream-config")
    one(rendered, "Secret", "fraudstream-secrets")


# ---------------------------------------------------------------------- schemas
def _kubernetes_validate():
    return pytest.importorskip(
        "kubernetes_validate",
        reason="pip install kubernetes-validate (ships the Kubernetes JSON schemas) to run this")


def test_builtin_objects_match_the_kubernetes_schemas(rendered):
    kv = _kubernetes_validate()
    version = kv.latest_version()
    checked = 0
    for doc in rendered:
        if doc["apiVersion"] == KEDA_API:
            continue
        try:
            kv.validate(doc, version, strict=True)  # strict: unknown fields are errors
        except kv.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']} {doc['metadata']['name']}: {path}: {exc.message}")
        checked += 1
    assert checked >= 8


def test_schema_validation_catches_a_typo():
    kv = _kubernetes_validate()
    doc = copy.deepcopy(one(kustomize_build(K8S / "base"), "StatefulSet", "fraudstream-worker"))
    doc["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(doc, kv.latest_version(), strict=True)


# The parts of KEDA's CRDs (keda.sh/v1alpha1) these manifests use; additionalProperties: false
# catches a misspelt field, which a cluster without KEDA's admission webhook would silently drop.
_STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
KEDA_SCHEMAS = {
    "ScaledObject": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": KEDA_API}, "kind": {"const": "ScaledObject"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {
                "type": "object", "additionalProperties": False,
                "required": ["scaleTargetRef", "triggers"],
                "properties": {
                    "scaleTargetRef": {
                        "type": "object", "additionalProperties": False, "required": ["name"],
                        "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                       "name": {"type": "string"},
                                       "envSourceContainerName": {"type": "string"}}},
                    "pollingInterval": {"type": "integer", "minimum": 1},
                    "cooldownPeriod": {"type": "integer", "minimum": 0},
                    "idleReplicaCount": {"type": "integer", "minimum": 0},
                    "minReplicaCount": {"type": "integer", "minimum": 0},
                    "maxReplicaCount": {"type": "integer", "minimum": 1},
                    "advanced": {
                        "type": "object", "additionalProperties": False,
                        "properties": {
                            "restoreToOriginalReplicaCount": {"type": "boolean"},
                            "horizontalPodAutoscalerConfig": {
                                "type": "object", "additionalProperties": False,
                                "properties": {"name": {"type": "string"},
                                               "behavior": {"type": "object"}}}}},
                    "fallback": {"type": "object"},
                    "triggers": {
                        "type": "array", "minItems": 1,
                        "items": {
                            "type": "object", "additionalProperties": False,
                            "required": ["type", "metadata"],
                            "properties": {
                                "type": {"type": "string"}, "name": {"type": "string"},
                                "metadata": _STRING_MAP,
                                "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                                "authenticationRef": {
                                    "type": "object", "additionalProperties": False,
                                    "required": ["name"],
                                    "properties": {"name": {"type": "string"},
                                                   "kind": {"enum": ["TriggerAuthentication",
                                                                     "ClusterTriggerAuthentication"]}}},
                            }}},
                }}},
    },
    "TriggerAuthentication": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": KEDA_API}, "kind": {"const": "TriggerAuthentication"},
            "metadata": {"type": "object", "required": ["name"]},
            "spec": {
                "type": "object", "additionalProperties": False,
                "properties": {
                    "secretTargetRef": {
                        "type": "array",
                        "items": {"type": "object", "additionalProperties": False,
                                  "required": ["parameter", "name", "key"],
                                  "properties": {"parameter": {"type": "string"},
                                                 "name": {"type": "string"},
                                                 "key": {"type": "string"}}}},
                    "env": {"type": "array"},
                }}},
    },
}
# Kafka scaler metadata keys (KEDA 2.x docs); anything else is a typo the scaler would ignore.
KAFKA_SCALER_KEYS = {
    "bootstrapServers", "consumerGroup", "topic", "lagThreshold", "activationLagThreshold",
    "offsetResetPolicy", "allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag", "partitionLimitation", "version", "sasl", "tls", "unsafeSsl",
}


def test_keda_objects_match_their_schema(rendered):
    import jsonschema

    keda = [d for d in rendered if d["apiVersion"] == KEDA_API]
    assert keda, "no KEDA objects"
    for doc in keda:
        assert doc["kind"] in KEDA_SCHEMAS, f"no schema for {doc['kind']}"
        jsonschema.validate(doc, KEDA_SCHEMAS[doc["kind"]])
        for trigger in doc["spec"].get("triggers", []):
            assert trigger["type"] == "kafka"
            unknown = set(trigger["metadata"]) - KAFKA_SCALER_KEYS
            assert not unknown, f"unknown kafka scaler metadata {sorted(unknown)}"


# ---------------------------------------------------------------------- containers
def test_containers_run_the_project_image_pinned(rendered):
    for doc, container in workloads(rendered):
        name, tag = split_image(container["image"])
        assert name.split("/")[-1] == IMAGE_REPO, container["image"]
        assert tag and tag != "latest", f"{container['name']}: pin the image tag: {container['image']}"
        assert container.get("imagePullPolicy") in (None, "IfNotPresent"), container["name"]


def test_overlay_points_at_a_registry(overlay):
    for _, container in workloads(overlay):
        assert "/" in split_image(container["image"])[0], container["image"]


def test_container_commands_are_real_or_planned(rendered):
    main = _cli_main()
    seen = {}
    for doc, container in workloads(rendered):
        assert "command" not in container, (
            f"{container['name']}: keep the image's ENTRYPOINT (fraudstream); set args only")
        path, _ = check_command(main, container["args"])
        seen[container["name"]] = path
    assert seen == {"worker": ["worker"], "trainer": ["trainer"], "topics": ["topics", "create"]}


def test_env_names_are_settings_and_load(rendered):
    for doc, container in workloads(rendered):
        names = set(container_env(rendered, doc, container))
        for source in ("ConfigMap", "Secret"):
            for obj in find(rendered, source):
                names |= set(obj.get("data") or {}) | set(obj.get("stringData") or {})
        for name in names:
            assert name.startswith(ENV_PREFIX), f"{name}: only FRAUDSTREAM_* settings here"
            if name.startswith(KAFKA_PASSTHROUGH_PREFIX):
                assert len(name) > len(KAFKA_PASSTHROUGH_PREFIX)
                continue
            assert name[len(ENV_PREFIX):].lower() in SETTINGS_FIELDS, f"{name} is not a setting"
        settings = container_settings(rendered, doc, container)  # coerces and validates
        state_dir = Path(settings.state_dir)
        assert state_dir.is_absolute(), f"{container['name']}: state_dir {state_dir}"


def test_env_sources_exist(rendered):
    for doc, container in workloads(rendered):
        for source in container.get("envFrom", []):
            ref = source.get("configMapRef") or source.get("secretRef")
            kind = "ConfigMap" if "configMapRef" in source else "Secret"
            assert find(rendered, kind, ref["name"]), f"{kind} {ref['name']} is not rendered"
            assert not ref.get("optional"), "a missing settings source must stop the pod"


def test_containers_agree_on_the_topology(rendered):
    settings = [container_settings(rendered, d, c) for d, c in workloads(rendered)]
    for field in ("bootstrap_servers", "topic_events", "topic_labels", "topic_scores",
                  "topic_dead_letter", "partitions", "replication_factor", "security_protocol"):
        assert len({getattr(s, field) for s in settings}) == 1, field


def test_containers_run_as_the_image_user(rendered):
    stage = final_stage(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))
    image_uid = int([i.args for i in stage if i.keyword == "USER"][-1].split(":")[0])
    for doc, container in workloads(rendered):
        pod = pod_spec(doc).get("securityContext", {})
        own = container.get("securityContext", {})
        assert own.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, container["name"]
        assert own.get("runAsUser", pod.get("runAsUser")) == image_uid, container["name"]
        assert own.get("allowPrivilegeEscalation") is False, container["name"]
        assert own.get("capabilities", {}).get("drop") == ["ALL"], container["name"]
        assert (own.get("seccompProfile") or pod.get("seccompProfile", {})).get("type") == "RuntimeDefault"
        if own.get("readOnlyRootFilesystem"):
            mounts_covering(doc, container, "/tmp") if container["name"] in LONG_RUNNING else None
        resources = container.get("resources", {})
        assert resources.get("requests", {}).get("memory"), f"{container['name']}: memory request"
        assert resources.get("limits", {}).get("memory"), f"{container['name']}: memory limit"


def test_long_running_containers_serve_metrics_and_probes(rendered):
    found = set()
    for doc, container in workloads(rendered):
        if container["name"] not in LONG_RUNNING:
            continue
        found.add(container["name"])
        settings = container_settings(rendered, doc, container)
        assert settings.metrics_host == "0.0.0.0", f"{container['name']}: probes cannot reach it"
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        assert ports.get("metrics") == settings.metrics_port == metrics_names.DEFAULT_METRICS_PORT
        probes = {kind: container.get(kind) for kind in ("startupProbe", "livenessProbe",
                                                         "readinessProbe")}
        for kind, probe in probes.items():
            assert probe and "httpGet" in probe, f"{container['name']}: needs an HTTP {kind}"
            port = probe["httpGet"]["port"]
            assert port in ports or port in ports.values(), f"{kind} probes unknown port {port}"
        assert probes["livenessProbe"]["httpGet"]["path"] == metrics_names.LIVENESS_PATH
        assert probes["startupProbe"]["httpGet"]["path"] == metrics_names.LIVENESS_PATH
        assert probes["readinessProbe"]["httpGet"]["path"] == metrics_names.READINESS_PATH
        # A restore may take minutes: the startup probe must allow for it before liveness applies.
        startup = probes["startupProbe"]
        assert startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3) >= 300
        grace = pod_spec(doc).get("terminationGracePeriodSeconds", 30)
        assert grace * 1000 >= 3 * settings.transaction_timeout_ms, (
            f"{container['name']}: {grace}s grace cannot finish a commit "
            f"(transaction timeout {settings.transaction_timeout_ms} ms)")
    assert found == LONG_RUNNING


def test_volume_mounts_have_volumes_and_state_is_persistent(rendered):
    for doc, container in workloads(rendered):
        for mount in container.get("volumeMounts", []):
            mounts_covering(doc, container, mount["mountPath"])
        settings = container_settings(rendered, doc, container)
        if container["name"] == "worker":
            volume = mounts_covering(doc, container, settings.state_dir)
            assert "persistentVolumeClaim" in volume, "worker state must be on a persistent volume"
            claim = volume["persistentVolumeClaim"]
            assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
            assert claim["spec"]["resources"]["requests"]["storage"]
        elif container["name"] == "trainer":
            mounts_covering(doc, container, settings.state_dir)
        for path in (settings.ssl_ca_location, settings.ssl_certificate_location,
                     settings.ssl_key_location):
            if path:
                volume = mounts_covering(doc, container, path)
                source = volume.get("secret", {}).get("secretName") or volume.get(
                    "configMap", {}).get("name")
                assert source, f"{container['name']}: {path} must come from a Secret or ConfigMap"
                assert source in EXTERNAL_SECRETS or find(rendered, "Secret", source) or find(
                    rendered, "ConfigMap", source), source


# ---------------------------------------------------------------------- workers
def test_worker_statefulset(rendered):
    sts = one(rendered, "StatefulSet", "fraudstream-worker")
    template_labels = sts["spec"]["template"]["metadata"]["labels"]
    assert labels_match(sts["spec"]["selector"]["matchLabels"], template_labels)
    service = one(rendered, "Service", sts["spec"]["serviceName"])
    assert service["spec"].get("clusterIP") == "None", "the governing Service must be headless"
    assert labels_match(service["spec"]["selector"], template_labels)
    (container,) = [c for c in pod_containers(sts) if c["name"] == "worker"]
    instance = {e["name"]: e for e in container.get("env", [])}.get(ENV_PREFIX + "INSTANCE_ID")
    assert instance and instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", (
        "the pod name is the stable instance id (state directory, transactional id)")
    assert sts["spec"].get("podManagementPolicy") == "Parallel"
    assert pod_spec(sts)["terminationGracePeriodSeconds"] >= 30


def test_pdb_covers_the_workers(rendered):
    pdb = one(rendered, "PodDisruptionBudget", "fraudstream-worker")
    sts = one(rendered, "StatefulSet", "fraudstream-worker")
    assert labels_match(pdb["spec"]["selector"]["matchLabels"],
                        sts["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"].get("maxUnavailable") == 1


def test_services_select_pods_and_name_their_ports(rendered):
    pods = [(d, d["spec"]["template"]["metadata"]["labels"]) for d in rendered
            if d["kind"] in WORKLOAD_KINDS]
    for service in find(rendered, "Service"):
        selected = [d for d, labels in pods if labels_match(service["spec"]["selector"], labels)]
        assert len(selected) == 1, f"Service {service['metadata']['name']} selects {len(selected)}"
        container_ports = {p["name"]: p["containerPort"] for c in pod_containers(selected[0])
                           for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in container_ports or port["targetPort"] in container_ports.values()
            assert port["port"] == metrics_names.DEFAULT_METRICS_PORT
        annotations = service["metadata"].get("annotations", {})
        assert annotations.get("prometheus.io/port") == str(metrics_names.DEFAULT_METRICS_PORT)
        assert annotations.get("prometheus.io/path") == metrics_names.METRICS_PATH


def test_autoscaler_follows_the_worker_group(rendered):
    scaled = one(rendered, "ScaledObject", "fraudstream-worker")
    sts = one(rendered, "StatefulSet", "fraudstream-worker")
    target = scaled["spec"]["scaleTargetRef"]
    assert (target.get("apiVersion"), target.get("kind"), target["name"]) == (
        "apps/v1", "StatefulSet", sts["metadata"]["name"])
    (container,) = [c for c in pod_containers(sts) if c["name"] == "worker"]
    settings = container_settings(rendered, sts, container)
    assert scaled["spec"]["minReplicaCount"] == sts["spec"]["replicas"] >= 1
    assert scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"] <= settings.partitions, (
        "more workers than partitions sit idle")
    (trigger,) = scaled["spec"]["triggers"]
    meta = trigger["metadata"]
    assert meta["consumerGroup"] == settings.group_id
    assert meta["bootstrapServers"] == settings.bootstrap_servers
    assert "topic" not in meta, "lag over every topic of the group (events, repartition, labels)"
    assert int(meta["lagThreshold"]) > 0
    protocol = settings.security_protocol.upper()
    if protocol.startswith("SASL"):
        keda_sasl = {"PLAIN": "plaintext", "SCRAM-SHA-256": "scram_sha256",
                     "SCRAM-SHA-512": "scram_sha512"}[settings.sasl_mechanism.upper()]
        assert meta.get("sasl") == keda_sasl, meta
        auth = one(rendered, "TriggerAuthentication", trigger["authenticationRef"]["name"])
        params = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
        assert {"username", "password"} <= set(params)
    else:
        assert "sasl" not in meta and "authenticationRef" not in trigger
    assert (meta.get("tls") == "enable") == protocol.endswith("SSL")
    if meta.get("tls") == "enable" and settings.ssl_ca_location:
        assert "ca" in {r["parameter"] for r in auth["spec"]["secretTargetRef"]}


def test_trigger_authentication_reads_existing_secret_keys(rendered):
    for auth in find(rendered, "TriggerAuthentication"):
        for ref in auth["spec"]["secretTargetRef"]:
            if ref["name"] in EXTERNAL_SECRETS:
                continue
            assert ref["key"] in secret_data(one(rendered, "Secret", ref["name"])), ref


# ---------------------------------------------------------------------- trainer, topics job
def test_trainer_is_single_and_in_its_own_group(rendered):
    trainer = one(rendered, "Deployment", "fraudstream-trainer")
    sts = one(rendered, "StatefulSet", "fraudstream-worker")
    assert trainer["spec"]["replicas"] == 1
    assert trainer["spec"]["strategy"]["type"] == "Recreate", "never two trainers at once"
    t = container_settings(rendered, trainer, pod_containers(trainer)[0])
    w = container_settings(rendered, sts, pod_containers(sts)[0])
    assert t.group_id == w.group_id  # one application
    assert trainer_group(t) != w.group_id  # but never a member of the workers' group
    assert t.instance_id


def test_topics_job(rendered):
    job = one(rendered, "Job", "fraudstream-topics")
    assert pod_spec(job)["restartPolicy"] in ("OnFailure", "Never")
    assert job["spec"].get("backoffLimit", 6) >= 3, "the brokers may not be up yet"
    assert job["spec"].get("ttlSecondsAfterFinished") is not None


# ---------------------------------------------------------------------- overlay
def test_overlay_sets_namespace_and_secure_kafka(overlay):
    for doc in overlay:
        if doc["kind"] not in CLUSTER_SCOPED:
            assert doc["metadata"].get("namespace") == "fraudstream", doc["metadata"]["name"]
    assert one(overlay, "Namespace", "fraudstream")
    for doc, container in workloads(overlay):
        settings = container_settings(overlay, doc, container)
        assert settings.security_protocol == "SASL_SSL"
        assert settings.sasl_mechanism in ("SCRAM-SHA-256", "SCRAM-SHA-512")
        assert settings.sasl_username and settings.sasl_password
        assert settings.ssl_ca_location
        conf = settings.kafka_client_config()
        assert conf["security.protocol"] == "SASL_SSL" and conf["sasl.password"]


def test_base_secret_holds_no_credentials(base):
    for secret in find(base, "Secret"):
        assert all(v == "" for v in secret_data(secret).values()), secret["metadata"]["name"]
