"""Metric names, the Grafana dashboard and the Prometheus configuration hold together.

``stream/metrics_names.py`` is the one list of metrics the worker and trainer export; the dashboard
(``deploy/grafana/``), the alert rules and the scrape configuration (``deploy/prometheus/``) and
docs/operations.md must only use what it defines, with the labels it defines. No Prometheus or
Grafana runs here, so these checks read the files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream import metrics_names
from stream.metrics_names import METRICS, metric_for_series

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
PROVISIONING = ROOT / "deploy" / "grafana" / "provisioning"
PROMETHEUS = ROOT / "deploy" / "prometheus"
OPERATIONS_DOC = ROOT / "docs" / "operations.md"
COMPOSE_FILE = ROOT / "docker-compose.yml"

METRIC_RE = re.compile(r"\bfraudstream_[a-z0-9_]+\b")
BY_RE = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
MATCHER_RE = re.compile(r"\{([^}]*)\}")
LEGEND_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
# Labels Prometheus adds to every scraped series, plus the histogram bucket label.
TARGET_LABELS = {"instance", "job", "le", "pod", "namespace"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------- the names module
@pytest.mark.parametrize("metric", list(METRICS.values()), ids=list(METRICS))
def test_metric_definitions_follow_prometheus_conventions(metric):
    assert re.fullmatch(r"fraudstream_[a-z][a-z0-9_]*", metric.name), metric.name
    assert metric.kind in ("counter", "gauge", "histogram", "info"), metric.kind
    assert metric.help.strip(), f"{metric.name} needs help text"
    if metric.kind == "counter":
        assert metric.name.endswith("_total"), f"counter {metric.name} must end in _total"
    else:
        assert not metric.name.endswith("_total"), f"only counters end in _total: {metric.name}"
    if metric.kind == "histogram":
        assert metric.name.endswith("_seconds"), f"histograms here are durations: {metric.name}"
        assert metric.buckets and list(metric.buckets) == sorted(set(metric.buckets)), metric.buckets
    else:
        assert metric.buckets is None
    if metric.kind == "info":
        assert metric.name.endswith("_info"), metric.name
    for label in metric.labels:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", label), label
        assert label not in ("le", "quantile", "instance", "job"), f"{metric.name}: reserved {label}"
    assert len(set(metric.labels)) == len(metric.labels)


def test_the_metrics_from_the_issue_are_defined():
    wanted = {
        "fraudstream_events_consumed_total": ("stage", "partition"),
        "fraudstream_scores_total": ("decision",),
        "fraudstream_dead_letters_total": ("reason",),
        "fraudstream_consumer_lag": ("topic", "partition"),
        "fraudstream_processing_seconds": None,
        "fraudstream_end_to_end_seconds": None,
        "fraudstream_commit_seconds": None,
        "fraudstream_state_entities": ("stage",),
        "fraudstream_restore_records_total": None,
        "fraudstream_model_version_info": None,
        "fraudstream_quality_auc": ("model",),
        "fraudstream_quality_average_precision": ("model",),
        "fraudstream_quality_precision_at_budget": ("model",),
        "fraudstream_quality_recall_at_budget": ("model",),
        "fraudstream_label_delay_mean_seconds": (),
        "fraudstream_drift_alarms_total": ("model",),
        "fraudstream_restore_restored_records": ("stage", "partition"),
        "fraudstream_restore_remaining_records": ("stage", "partition"),
    }
    for name, labels in wanted.items():
        assert name in METRICS, name
        if labels is not None:
            assert METRICS[name].labels == labels, name
    for name in ("fraudstream_processing_seconds", "fraudstream_end_to_end_seconds",
                 "fraudstream_commit_seconds"):
        assert METRICS[name].kind == "histogram"


def test_series_names_are_unambiguous():
    seen: dict[str, str] = {}
    for metric in METRICS.values():
        for series in metric.series():
            assert series not in seen, f"{series} exposed by {metric.name} and {seen[series]}"
            seen[series] = metric.name
            assert metric_for_series(series) is metric


def test_endpoint_conventions():
    assert metrics_names.DEFAULT_METRICS_PORT == 9400
    assert (metrics_names.METRICS_PATH, metrics_names.LIVENESS_PATH,
            metrics_names.READINESS_PATH) == ("/metrics", "/healthz", "/readyz")
    from stream.settings import Settings

    assert Settings().metrics_port == metrics_names.DEFAULT_METRICS_PORT
    assert Settings().metrics_host == "127.0.0.1", "the default must not listen beyond loopback"


# ---------------------------------------------------------------------- PromQL references
def check_promql(expr: str, where: str) -> set[str]:
    """Every fraudstream metric ``expr`` names is defined, and every label it groups by, matches
    on or prints is a label of one of those metrics. Returns the families used."""
    used = set()
    labels: set[str] = set(TARGET_LABELS)
    for name in METRIC_RE.findall(expr):
        metric = metric_for_series(name)
        if metric is None and name in METRICS:  # a bare histogram name exposes no samples
            raise AssertionError(f"{where}: histogram {name} is queried as {name}_bucket/_sum/_count")
        assert metric is not None, f"{where}: {name} is not in stream/metrics_names.py"
        used.add(metric.name)
        labels |= set(metric.labels)
    assert used or "up{" in expr, f"{where}: no fraudstream metric in {expr!r}"
    for group in BY_RE.findall(expr):
        for label in filter(None, (s.strip() for s in group.split(","))):
            assert label in labels, f"{where}: groups by {label!r}, not a label of {sorted(used)}"
    for matchers in MATCHER_RE.findall(expr):
        if matchers.startswith("{"):
            continue  # a legend template, not a matcher
        for matcher in filter(None, (m.strip() for m in matchers.split(","))):
            label = re.split(r"[=!~]", matcher, maxsplit=1)[0].strip()
            assert label in labels, f"{where}: matches on {label!r}, not a label of {sorted(used)}"
    return used


def dashboard_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    panels = []
    for panel in dashboard.get("panels", []):
        panels.append(panel)
        panels.extend(panel.get("panels", []))  # collapsed rows keep their panels inside
    return panels


@pytest.fixture(scope="module", params=DASHBOARDS, ids=[p.name for p in DASHBOARDS])
def dashboard(request) -> dict[str, Any]:
    return json.loads(request.param.read_text(encoding="utf-8"))


def test_there_is_a_dashboard():
    assert [p.name for p in DASHBOARDS] == ["fraudstream.json"]


def test_dashboard_structure(dashboard):
    assert dashboard.get("uid") and dashboard.get("title")
    panels = dashboard_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel.get("targets"), f"panel {panel['title']!r} queries nothing"


def test_every_dashboard_metric_is_defined(dashboard):
    datasource_uids = {d["uid"] for d in _provisioned_datasources()}
    used: set[str] = set()
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r}"
            assert target["datasource"]["uid"] in datasource_uids, where
            families = check_promql(target["expr"], where)
            used |= families
            labels = set(TARGET_LABELS).union(*(METRICS[f].labels for f in families))
            for label in LEGEND_RE.findall(target.get("legendFormat", "")):
                assert label in labels, f"{where}: legend uses {label!r}, not a label"
    # The panels named in the issue are on the dashboard.
    for name in ("fraudstream_events_consumed_total", "fraudstream_scores_total",
                 "fraudstream_dead_letters_total", "fraudstream_consumer_lag",
                 "fraudstream_processing_seconds", "fraudstream_end_to_end_seconds",
                 "fraudstream_commit_seconds", "fraudstream_state_entities",
                 "fraudstream_restore_records_total", "fraudstream_model_version_info",
                 "fraudstream_quality_auc", "fraudstream_drift_alarms_total",
                 "fraudstream_quality_average_precision",
                 "fraudstream_quality_precision_at_budget", "fraudstream_quality_recall_at_budget",
                 "fraudstream_quality_window_labels", "fraudstream_label_delay_mean_seconds",
                 "fraudstream_restore_restored_records", "fraudstream_restore_remaining_records"):
        assert name in used, f"no dashboard panel shows {name}"


def test_check_promql_catches_mistakes():
    with pytest.raises(AssertionError, match="not in stream/metrics_names.py"):
        check_promql("rate(fraudstream_no_such_metric_total[1m])", "t")
    with pytest.raises(AssertionError, match="groups by 'decision'"):
        check_promql("sum by (decision) (rate(fraudstream_dead_letters_total[1m]))", "t")
    with pytest.raises(AssertionError, match="histogram"):
        check_promql("fraudstream_commit_seconds", "t")


# ---------------------------------------------------------------------- Grafana provisioning
def _provisioned_datasources() -> list[dict[str, Any]]:
    out = []
    for path in (PROVISIONING / "datasources").glob("*.yml"):
        out.extend(yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"])
    return out


def _mount_target(service: str, source: str) -> str:
    for volume in compose()["services"][service].get("volumes", []):
        parts = str(volume).split(":")
        if parts[0] == source:
            return parts[1]
    raise AssertionError(f"{service} does not mount {source}")


def test_datasource_points_at_the_compose_prometheus():
    (ds,) = _provisioned_datasources()
    assert ds["type"] == "prometheus" and ds["uid"] == "prometheus"
    host, port = re.fullmatch(r"http://([^:/]+):(\d+)/?", ds["url"]).groups()
    assert host in compose()["services"], f"datasource host {host} is not a Compose service"
    assert port == "9090"


def test_dashboard_provider_reads_the_mounted_folder():
    (path,) = (PROVISIONING / "dashboards").glob("*.yml")
    (provider,) = yaml.safe_load(path.read_text(encoding="utf-8"))["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == _mount_target("grafana", "./deploy/grafana/dashboards")
    assert _mount_target("grafana", "./deploy/grafana/provisioning") == "/etc/grafana/provisioning"
    home = compose()["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).parent == Path(provider["options"]["path"])
    assert (ROOT / "deploy" / "grafana" / "dashboards" / Path(home).name).exists(), home


# ---------------------------------------------------------------------- Prometheus
def test_prometheus_scrapes_every_long_running_service():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    services = compose()["services"]
    scraped: dict[str, int] = {}
    for job in config["scrape_configs"]:
        if not job["job_name"].startswith("fraudstream-"):
            continue
        assert job.get("metrics_path", "/metrics") == metrics_names.METRICS_PATH
        for sd in job.get("dns_sd_configs", []):
            assert sd["type"] == "A"
            for name in sd["names"]:
                scraped[name] = int(sd["port"])
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, _, port = target.rpartition(":")
                scraped[host] = int(port)
    for name in ("worker", "trainer"):
        assert name in scraped, f"Prometheus does not scrape {name}"
    for name, port in scraped.items():
        assert name in services, f"Prometheus scrapes {name}, which is not a Compose service"
        exposed = {int(str(p).split("/")[0]) for p in services[name].get("expose", [])}
        assert port in exposed and port == metrics_names.DEFAULT_METRICS_PORT, (name, port)


def test_alert_rules_use_defined_metrics():
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text(encoding="utf-8"))
    rules_in_container = set(config.get("rule_files", []))
    mounted = {str(v).split(":")[1]: str(v).split(":")[0]
               for v in compose()["services"]["prometheus"]["volumes"]}
    for path in rules_in_container:
        assert path in mounted, f"rule file {path} is not mounted into prometheus"
        rules = yaml.safe_load((ROOT / mounted[path]).read_text(encoding="utf-8"))
        for group in rules["groups"]:
            for rule in group["rules"]:
                assert rule["alert"] and rule["annotations"]["summary"], rule
                check_promql(rule["expr"], f"alert {rule['alert']}")


# ---------------------------------------------------------------------- docs
def test_operations_doc_lists_exactly_the_defined_metrics():
    text = OPERATIONS_DOC.read_text(encoding="utf-8")
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\|\s*`(fraudstream_[a-z0-9_]+)`", section, re.M))
    assert documented == set(METRICS), (
        f"docs/operations.md metrics table differs from stream/metrics_names.py: "
        f"missing {sorted(set(METRICS) - documented)}, unknown {sorted(documented - set(METRICS))}")
    # (``fraudstream_worker-state`` is a Docker volume, not a metric: hyphenated names are skipped)
    for name in re.findall(r"\bfraudstream_[a-z0-9_]+\b(?!-)", text):
        assert name in METRICS or metric_for_series(name) is not None, (
            f"docs/operations.md mentions unknown {name}")
