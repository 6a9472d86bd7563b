"""The deployment artifacts under ``deploy/`` and ``docs/operations.md``, validated by what can run here.

Every YAML and JSON file parses; the compose stack, Kubernetes manifests, Dockerfile and systemd unit carry the
properties operations rely on (two replicas, probes, non-root, secrets referenced rather than written); the
alert rules and scrape config pass ``promtool`` (skipped loudly when it is not installed); every metric a rule
or dashboard query names exists in ``gateway.metrics.Metrics``; no metric label identifies a person, record or
document; every alert has a runbook section and a promtool case that fires it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.metrics import MetricWrapperBase

from gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
PROM = DEPLOY / "prometheus"
K8S = DEPLOY / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"

YAML_FILES = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml"})
JSON_FILES = sorted(DEPLOY.rglob("*.json"))

# Labels Prometheus adds at scrape time or histograms carry; valid in any query.
TARGET_LABELS = {"job", "instance", "le", "env"}
# Series that Prometheus itself produces for the kpigw job.
PROMETHEUS_SERIES = {"up"}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY|PRIVATE_KEY|DATABASE_URL", re.IGNORECASE)


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _load_all(path: Path) -> list[Any]:
    with path.open(encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def _load(path: Path) -> Any:
    docs = _load_all(path)
    assert len(docs) == 1, f"{_rel(path)}: expected one YAML document, found {len(docs)}"
    return docs[0]


# --- the metrics the gateway exports -----------------------------------------------------------------------


def _populated_metrics() -> Metrics:
    """A Metrics with one child per labelled metric, so the registry shows every series name and label."""
    metrics = Metrics(clock=lambda: 100.0)
    health = metrics.source("probe")
    health.last_success = 50.0
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            # _labelnames is the only way to learn a wrapper's label names before any child exists.
            value.labels(*["probe"] * len(value._labelnames))
    return metrics


@pytest.fixture(scope="module")
def exported() -> dict[str, set[str]]:
    """Series name (with _total, _bucket, _count, _sum suffixes) -> its label names, from the real registry."""
    series: dict[str, set[str]] = {}
    for family in _populated_metrics().registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    assert series, "gateway.metrics.Metrics exported nothing"
    return series


@pytest.fixture(scope="module")
def families() -> dict[str, str]:
    """Metric name as documented (counters with _total) -> type."""
    out = {}
    for family in _populated_metrics().registry.collect():
        name = f"{family.name}_total" if family.type == "counter" else family.name
        out[name] = family.type
    return out


def _alert_rules() -> list[dict[str, Any]]:
    return [rule for group in _load(PROM / "alerts.yml")["groups"] for rule in group["rules"]]


def _dashboard() -> dict[str, Any]:
    return json.loads((DEPLOY / "grafana" / "dashboard.json").read_text(encoding="utf-8"))


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def _queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert or recording rule and every dashboard query."""
    out = [(f"alerts.yml: {r.get('alert') or r.get('record')}", r["expr"]) for r in _alert_rules()]
    dashboard = _dashboard()
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            out.append((f"dashboard.json: panel {panel['title']!r}", target["expr"]))
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            out.append((f"dashboard.json: variable {var['name']}", var["definition"]))
    return out


_SELECTOR = re.compile(r"\b(kpigw_[a-z0-9_]+|up)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def test_every_query_names_an_exported_metric(exported: dict[str, set[str]]) -> None:
    problems = []
    for where, expr in _queries():
        used = _SELECTOR.findall(expr)
        assert used, f"{where}: no kpigw metric in {expr!r}"
        known_labels = set(TARGET_LABELS)
        for name, matchers in used:
            if name in PROMETHEUS_SERIES:
                continue
            if name not in exported:
                problems.append(f"{where}: {name} is not exported by gateway.metrics (known: {sorted(exported)})")
                continue
            known_labels |= exported[name]
            problems.extend(
                f"{where}: {name} has no label {label!r} (it has {sorted(exported[name])})"
                for label in _MATCHER.findall(matchers)
                if label not in exported[name] | TARGET_LABELS
            )
        for group in _GROUPING.findall(expr):
            for label in (s.strip() for s in group.split(",") if s.strip()):
                if label not in known_labels:
                    problems.append(f"{where}: grouping by {label!r}, which no metric in the query carries")
    assert not problems, "\n".join(problems)


_ID_LABEL = re.compile(r"(^|_)(id|ids|key|uuid|email|name)$|person|user|staff|citizen|record|document|dossier|^doc")


def test_no_metric_label_identifies_a_person_record_or_document(exported: dict[str, set[str]]) -> None:
    bad = {name: sorted(label for label in labels if _ID_LABEL.search(label)) for name, labels in exported.items()}
    bad = {name: labels for name, labels in bad.items() if labels}
    assert not bad, f"high-cardinality or personal labels in gateway/metrics.py: {bad}"


def test_every_metric_is_in_the_operations_table(families: dict[str, str]) -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    table = {m for line in text.splitlines() if line.startswith("|") for m in re.findall(r"`(kpigw_\w+)`", line)}
    missing = sorted(set(families) - table)
    unknown = sorted(table - set(families) - {n.removesuffix("_total") for n in families})
    assert not missing, f"docs/operations.md metrics table lacks {missing}"
    assert not unknown, f"docs/operations.md metrics table names metrics gateway/metrics.py does not have: {unknown}"


def test_gateway_exposition_passes_promtool_lint(promtool: str) -> None:
    exposition = generate_latest(_populated_metrics().registry)
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# --- every file parses ----------------------------------------------------------------------------------


def test_deploy_has_the_expected_files() -> None:
    for rel in (
        "Dockerfile",
        "compose.yaml",
        "systemd/kpigw.service",
        "prometheus/prometheus.yml",
        "prometheus/alerts.yml",
        "prometheus/alerts_test.yml",
        "grafana/dashboard.json",
        "k8s/kustomization.yaml",
    ):
        assert (DEPLOY / rel).is_file(), f"deploy/{rel} is missing"
    assert OPERATIONS.is_file()


@pytest.mark.parametrize("path", YAML_FILES, ids=_rel)
def test_yaml_parses(path: Path) -> None:
    assert _load_all(path), f"{_rel(path)} is empty"


@pytest.mark.parametrize("path", JSON_FILES, ids=_rel)
def test_json_parses(path: Path) -> None:
    assert json.loads(path.read_text(encoding="utf-8"))


# --- Prometheus with promtool ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip(
            "promtool is not on PATH, so deploy/prometheus (scrape config, alert rules, rule unit tests) is NOT "
            "validated: install it with `apt-get install -y prometheus` (Debian) and re-run"
        )
    return found


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}"


def test_promtool_check_config(promtool: str, tmp_path: Path) -> None:
    # The token file exists only inside the Prometheus container; point the copy at a stand-in.
    token = tmp_path / "metrics_token"
    token.write_text("stand-in\n", encoding="utf-8")
    config = (PROM / "prometheus.yml").read_text(encoding="utf-8")
    assert "credentials_file: /run/secrets/metrics_token" in config
    (tmp_path / "prometheus.yml").write_text(config.replace("/run/secrets/metrics_token", str(token)), "utf-8")
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    _run([promtool, "check", "config", "prometheus.yml"], cwd=tmp_path)


def test_promtool_check_rules(promtool: str) -> None:
    _run([promtool, "check", "rules", "alerts.yml"], cwd=PROM)


def test_promtool_test_rules(promtool: str) -> None:
    _run([promtool, "test", "rules", "alerts_test.yml"], cwd=PROM)


def test_scrape_config_uses_a_bearer_token_file() -> None:
    config = _load(PROM / "prometheus.yml")
    assert config["rule_files"] == ["alerts.yml"]
    (job,) = (j for j in config["scrape_configs"] if j["job_name"] == "kpigw")
    assert job["authorization"]["credentials_file"].startswith("/run/secrets/")
    assert "credentials" not in job["authorization"], "the token must come from a file, not be written inline"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert len(targets) >= 2, "both gateway replicas are scraped"


def test_every_alert_has_a_runbook_section_and_severity() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 _-]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in OPERATIONS.read_text(encoding="utf-8").splitlines()
        if line.startswith("#")
    }
    for rule in _alert_rules():
        if "alert" not in rule:
            continue
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        runbook = rule["annotations"]["runbook"]
        doc, _, anchor = runbook.partition("#")
        assert doc == "docs/operations.md", runbook
        assert anchor in anchors, f"{rule['alert']}: docs/operations.md has no section #{anchor}"


def test_every_alert_has_a_firing_unit_test() -> None:
    tests = _load(PROM / "alerts_test.yml")["tests"]
    fired = {case["alertname"] for t in tests for case in t.get("alert_rule_test", []) if case.get("exp_alerts")}
    alerts = {r["alert"] for r in _alert_rules() if "alert" in r}
    assert alerts - fired == set(), f"alerts without a promtool case that fires them: {sorted(alerts - fired)}"
    required = {"KpigwSourceDown", "KpigwSourceFreshnessLag", "KpigwQuarantineGrowing", "KpigwRepeatedSyncFailures"}
    assert required <= alerts


# --- Grafana -----------------------------------------------------------------------------------------------


def test_dashboard_panels_and_datasource() -> None:
    dashboard = _dashboard()
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    provisioned = _load(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")
    (datasource,) = provisioned["datasources"]
    (ds_var,) = (v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert ds_var["current"]["value"] == datasource["uid"]
    metrics_shown = " ".join(t["expr"] for p in panels for t in p.get("targets", []))
    for name in (
        "kpigw_source_records_total",
        "kpigw_sync_duration_seconds_bucket",
        "kpigw_upstream_request_seconds_bucket",
        "kpigw_upstream_retries_total",
        "kpigw_source_circuit_state",
        "kpigw_source_freshness_lag_seconds",
        "kpigw_facts_written_total",
        "kpigw_quarantine_open",
        "kpigw_api_requests_total",
        "kpigw_api_request_seconds_bucket",
    ):
        assert name in metrics_shown, f"the dashboard has no panel for {name}"
    for panel in panels:
        if panel["type"] != "row":
            assert panel["targets"], f"panel {panel['title']!r} has no query"
            assert panel["datasource"]["uid"] == "${datasource}"


# --- Docker and compose ------------------------------------------------------------------------------------


def test_dockerfile_pip_installs_and_runs_kpigw_serve_as_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [line.strip() for line in re.sub(r"\\\n", " ", text).splitlines() if line.strip()]
    assert "python:3.11-slim" in text
    assert any(re.match(r"RUN .*\bpip install \.(\s|$)", line) for line in lines), "the image pip-installs the repo"
    users = [line.split(None, 1)[1] for line in lines if line.startswith("USER ")]
    assert users, "no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    (healthcheck,) = (line for line in lines if line.startswith("HEALTHCHECK "))
    assert "/healthz" in healthcheck
    cmd = [line for line in lines if line.startswith("CMD ")][-1]
    assert json.loads(cmd.removeprefix("CMD ")) == ["kpigw", "serve"]
    assert not any(line.startswith("ENTRYPOINT") for line in lines)
    assert not SECRET_NAME.search(" ".join(line for line in lines if line.startswith(("ENV", "ARG"))))


def _env(env: dict[str, Any] | list[str]) -> dict[str, str]:
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {k: str(v) for k, v in env.items()}


def test_compose_two_replicas_share_postgres_and_secrets_are_not_inline() -> None:
    compose = _load(DEPLOY / "compose.yaml")
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:16")
    gateways = {n: s for n, s in services.items() if s.get("command") == ["kpigw", "serve"]}
    assert len(gateways) == 2, f"expected two gateway replicas, found {sorted(gateways)}"
    replica_ids = {_env(s["environment"])["KPIGW_REPLICA_ID"] for s in gateways.values()}
    assert len(replica_ids) == 2, "each replica has its own KPIGW_REPLICA_ID"
    urls = {_env(s["environment"])["KPIGW_DATABASE_URL"] for s in gateways.values()}
    assert len(urls) == 1, "the replicas share one database"
    (url,) = urls
    assert url.startswith("postgresql")
    assert "@postgres:" in url
    assert ":" not in url.split("://", 1)[1].split("@", 1)[0], "no password in the database URL"
    for name in ("prometheus", "grafana"):
        assert name in services
    for name, service in services.items():
        for key, value in _env(service.get("environment", {})).items():
            if SECRET_NAME.search(key) and key != "KPIGW_DATABASE_URL":
                assert key.endswith("_FILE"), f"compose {name}: {key}={value!r} is an inline secret"
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"compose {name}: {port} is published beyond loopback"
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")
    ignored = (DEPLOY / "secrets" / ".gitignore").read_text(encoding="utf-8").split()
    assert "*" in ignored, "deploy/secrets/ must not be committable"
    for service in services.values():
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            if host.startswith("."):
                assert (DEPLOY / host).exists(), f"compose mounts {host}, which does not exist"


# --- Kubernetes --------------------------------------------------------------------------------------------


def _k8s_docs() -> list[tuple[Path, dict[str, Any]]]:
    return [(p, d) for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml" for d in _load_all(p)]


def test_k8s_manifests_are_well_formed_and_hold_no_secret_values() -> None:
    docs = _k8s_docs()
    kinds = {d["kind"] for _, d in docs}
    assert {"Deployment", "Service", "ConfigMap"} <= kinds
    for path, doc in docs:
        for field in ("apiVersion", "kind", "metadata"):
            assert doc.get(field), f"{_rel(path)}: no {field}"
        assert doc["metadata"].get("name"), f"{_rel(path)}: no metadata.name"
        assert doc["kind"] != "Secret", f"{_rel(path)}: Secrets are created out of band, never committed"
        if doc["kind"] == "ConfigMap":
            for key, value in doc["data"].items():
                assert not SECRET_NAME.search(key), f"{_rel(path)}: {key} belongs in a Secret"
                assert "password:" not in value or "${" in value, f"{_rel(path)}: {key} holds a password"
    kustomization = _load(K8S / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource


def test_k8s_deployment_probes_resources_and_security() -> None:
    (deployment,) = (d for _, d in _k8s_docs() if d["kind"] == "Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["command"] == ["kpigw", "serve"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("KPIGW_DATABASE_URL", "KPIGW_METRICS_TOKEN"):
        assert "secretKeyRef" in env[name]["valueFrom"], f"{name} must come from a Secret"
    for name, entry in env.items():
        assert not (SECRET_NAME.search(name) and "value" in entry), f"{name} is written inline"
    selector = spec["selector"]["matchLabels"]
    (service,) = (d for _, d in _k8s_docs() if d["kind"] == "Service")
    assert service["spec"]["selector"] == selector
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    mounted = {v["name"] for v in container["volumeMounts"]}
    assert mounted == {v["name"] for v in pod["volumes"]}
    assert any(v["mountPath"] == "/tmp" for v in container["volumeMounts"]), "read-only root needs a writable /tmp"


def test_k8s_source_configmap_is_a_valid_source(tmp_path: Path) -> None:
    from connectors.declarative.config import RestSourceConfig
    from gateway.yamlconf import load_model

    (sources,) = (d for _, d in _k8s_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "kpigw-sources")
    for filename, text in sources["data"].items():
        path = tmp_path / filename
        path.write_text(text, encoding="utf-8")
        config = load_model(path, RestSourceConfig, env={"EOFFICE_PASSWORD": "stand-in"})
        assert config.streams


def test_kustomize_builds() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not on PATH: `kubectl kustomize deploy/k8s` NOT checked")
    result = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    kinds = {d["kind"] for d in yaml.safe_load_all(result.stdout) if d}
    assert {"Namespace", "Deployment", "Service", "ConfigMap", "PodDisruptionBudget"} <= kinds


# --- systemd -----------------------------------------------------------------------------------------------


def _unit(path: Path) -> dict[str, dict[str, list[str]]]:
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
        else:
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_unit_is_hardened() -> None:
    path = DEPLOY / "systemd" / "kpigw.service"
    service = _unit(path)["Service"]
    assert service.get("DynamicUser") == ["yes"] or service.get("User", ["root"])[-1] != "root"
    assert service["ProtectSystem"] == ["strict"]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["Restart"] == ["on-failure"]
    assert service["EnvironmentFile"]
    assert "kpigw serve" in service["ExecStart"][-1]
    for value in service.get("Environment", []):
        assert not SECRET_NAME.search(value.partition("=")[0]), f"{value}: secrets go in EnvironmentFile/credentials"


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not on PATH: deploy/systemd/kpigw.service NOT verified by systemd")
    unit = tmp_path / "kpigw.service"
    shutil.copy(DEPLOY / "systemd" / "kpigw.service", unit)
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr
    assert not result.stderr.strip(), result.stderr
