"""The deployment files say only what the code understands (every SLUICE_* variable is a
setting, every command a `sluice` subcommand) and ship nothing open: no credential in the
repository or left empty, no password-less ClickHouse user, no anonymous Grafana, nothing but the
ingress published, the dashboard's variables passed as values."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, SecretStr

from sluice.cli.main import build_parser
from sluice.settings import Settings
from sluice.settings.worker import WorkerSettings
from tests.fixtures import helm

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
# ${NAME:?message}: compose refuses to start without NAME (deploy/.env, from make-secrets.sh).
REQUIRED = re.compile(r"^\$\{(\w+):\?[^}]+\}$")
SERVICE_MONITOR = {"metrics": {"serviceMonitor": {"enabled": True}}}
KUBERNETES = ("k8s/", "helm/")


def setting_names() -> set[str]:
    names = set()
    for field, info in Settings.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            names |= {f"SLUICE_{field}_{sub}".upper() for sub in kind.model_fields}
        else:
            names.add(f"SLUICE_{field}".upper())
    return names


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    """Every YAML document shipped, the Helm chart's templates as rendered with the ServiceMonitor
    on (their sources are templates, not YAML; deploy/k8s is the chart with its defaults)."""
    for path in sorted(DEPLOY.rglob("*.y*ml")):
        if path.is_relative_to(helm.CHART):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                yield str(path.relative_to(DEPLOY)), doc
    for name, text in helm.render(SERVICE_MONITOR):
        for doc in yaml.safe_load_all(text):
            if doc:
                yield f"helm/sluice/templates/{name}", doc


def variables(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (name, value) that sets an environment variable, wherever it is in a document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if isinstance(key, str) and key.startswith("SLUICE_"):
                yield key, value
            if key == "env" and isinstance(value, list):
                # a valueFrom (a Secret's key) yields None: the operator gives the value
                yield from ((e["name"], e.get("value")) for e in value if isinstance(e, dict))
            yield from variables(value)
    elif isinstance(node, list):
        for item in node:
            yield from variables(item)


def all_variables(node: Any) -> Iterator[tuple[str, Any]]:
    """Every environment variable a compose ``environment`` or a Kubernetes ``env`` sets."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "environment" and isinstance(value, dict):
                yield from value.items()
            elif key == "env" and isinstance(value, list):
                yield from ((e["name"], e.get("value")) for e in value if isinstance(e, dict))
            else:
                yield from all_variables(value)
    elif isinstance(node, list):
        for item in node:
            yield from all_variables(item)


def compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())["services"]
    return services


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's variables, the shared x-sluice-env (a YAML merge key) included."""
    return {str(k): str(v) for k, v in service.get("environment", {}).items()}


def k8s(kind: str, where: str = "k8s/") -> list[dict[str, Any]]:
    """deploy/k8s's objects of ``kind`` (or the rendered chart's, with ``where="helm/"``)."""
    return [doc for found, doc in documents() if found.startswith(where) and doc["kind"] == kind]


def commands(node: Any) -> Iterator[list[str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("command", "args") and isinstance(value, list) and all(isinstance(v, str) for v in value):
                yield value
            else:
                yield from commands(value)
    elif isinstance(node, list):
        for item in node:
            yield from commands(item)


def test_every_sluice_variable_is_a_setting_and_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    known = setting_names()
    found = [(where, name, value) for where, doc in documents() for name, value in variables(doc)]
    assert len(found) >= 20
    unknown = sorted({(where, name) for where, name, _ in found if name.startswith("SLUICE_") and name not in known})
    assert unknown == []
    for file in sorted({where for where, _, _ in found}):
        with monkeypatch.context() as env:
            for name in [n for n in os.environ if n.startswith("SLUICE_")]:
                env.delenv(name)
            for where, name, value in found:
                if where == file:
                    # compose interpolation (${VAR:?message}) or a Secret's key: the operator's value
                    env.setenv(name, operator_value(name) if value is None or str(value).startswith("${") else str(value))
            try:
                Settings()  # what the file's processes read: it must parse
            except Exception as exc:
                pytest.fail(f"{file}: its SLUICE_* values do not parse: {exc}")


def operator_value(name: str) -> str:
    """A value the operator could give (random: made-up credentials are refused)."""
    if name == "SLUICE_ENCRYPTION_KEYS":
        return json.dumps({"k1": base64.b64encode(secrets.token_bytes(32)).decode()})
    return secrets.token_urlsafe(32)


def secret_settings() -> set[str]:
    """The SLUICE_* variables of settings that hold a credential."""
    names = set()
    for field, info in Settings.model_fields.items():
        kind = info.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            for sub, sub_info in kind.model_fields.items():
                if "SecretStr" in str(sub_info.annotation):
                    names.add(f"SLUICE_{field}_{sub}".upper())
    return names


def test_the_secret_settings_are_known() -> None:
    assert {"SLUICE_AUTH_JWT_SECRET", "SLUICE_QUERY_ADMIN_TOKEN", "SLUICE_CLICKHOUSE_PASSWORD",
            "SLUICE_ENCRYPTION_KEYS"} <= secret_settings()
    assert isinstance(Settings(query={"admin_token": secrets.token_urlsafe(32)}).query.admin_token, SecretStr)


def test_no_credential_is_written_in_a_manifest() -> None:
    """Every credential comes from the operator: a required compose variable or a Secret's key."""
    secret = secret_settings() | {"GF_SECURITY_ADMIN_PASSWORD", "CLICKHOUSE_GRAFANA_PASSWORD"}
    found = [(where, name, value) for where, doc in documents() for name, value in all_variables(doc)]
    credentials = [(where, name, value) for where, name, value in found if name in secret]
    assert len(credentials) >= 10
    for where, name, value in credentials:
        if where.startswith(KUBERNETES):
            assert value is None, f"{where}: {name} is written in the manifest"
        else:
            assert REQUIRED.match(str(value)), f"{where}: {name}={value!r} is not a required variable"


def test_every_command_is_a_sluice_subcommand() -> None:
    subcommands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    found = [(where, cmd) for where, doc in documents() for cmd in commands(doc)]
    assert {cmd[0] for _, cmd in found} == {"gateway", "worker"}
    assert {where.split("/")[0] for where, _ in found} == {"docker-compose.yml", "k8s", "helm"}
    assert all(cmd[0] in subcommands for _, cmd in found)
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["sluice"]' in dockerfile


def test_the_kubernetes_objects_are_there() -> None:
    kinds = sorted((doc["kind"], doc["metadata"]["name"]) for where, doc in documents() if where.startswith("k8s/"))
    assert kinds == [
        ("ConfigMap", "sluice-keys"), ("ConfigMap", "sluice-settings"),
        ("Deployment", "sluice-gateway"), ("HorizontalPodAutoscaler", "sluice-gateway"),
        ("PodDisruptionBudget", "sluice-gateway"), ("PodDisruptionBudget", "sluice-worker"),
        ("Service", "sluice-gateway"), ("Service", "sluice-worker"),
        ("StatefulSet", "sluice-worker"),
    ]


def test_compose_clickhouse_has_no_password_less_user() -> None:
    """ClickHouse's `default` user (no password) is removed; every user's password is required
    from deploy/.env; the workers log in as `sluice` with its password, Grafana as a reader."""
    services = compose()
    clickhouse = services["clickhouse"]
    assert "ports" not in clickhouse  # on the stack's network only
    mount = next(v for v in clickhouse["volumes"] if v.startswith("./clickhouse-users.xml:"))
    assert mount == "./clickhouse-users.xml:/etc/clickhouse-server/users.d/sluice.xml:ro"
    users = ET.parse(DEPLOY / "clickhouse-users.xml").getroot().find("users")
    assert users is not None
    assert [(u.tag, u.get("remove")) for u in users if u.get("remove")] == [("default", "remove")]
    passwords = {}
    for user in users:
        if user.get("remove"):
            continue
        password = user.find("password")
        assert password is not None and password.get("from_env") and not (password.text or "").strip(), user.tag
        passwords[user.tag] = password.get("from_env")
    assert passwords == {"sluice": "SLUICE_CLICKHOUSE_PASSWORD", "grafana": "CLICKHOUSE_GRAFANA_PASSWORD"}
    for variable in passwords.values():
        match = REQUIRED.match(environment(clickhouse)[variable])
        assert match and match.group(1) == variable
    worker = environment(services["worker"])
    assert worker["SLUICE_CLICKHOUSE_USERNAME"] == "sluice"
    assert worker["SLUICE_CLICKHOUSE_PASSWORD"] == environment(clickhouse)["SLUICE_CLICKHOUSE_PASSWORD"]
    grafana_user = users.find("grafana")
    assert grafana_user is not None
    assert [q.text for q in grafana_user.iter("query")] == ["GRANT SELECT ON sluice.*"]
    profile = ET.parse(DEPLOY / "clickhouse-users.xml").getroot().find(f"profiles/{grafana_user.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") == "1"
    source = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/clickhouse.yaml").read_text())["datasources"][0]
    assert source["jsonData"]["username"] == "grafana"
    assert source["secureJsonData"]["password"] == "$CLICKHOUSE_GRAFANA_PASSWORD"
    assert environment(services["grafana"])["CLICKHOUSE_GRAFANA_PASSWORD"] == environment(clickhouse)["CLICKHOUSE_GRAFANA_PASSWORD"]


def test_compose_grafana_requires_a_login() -> None:
    grafana = environment(compose()["grafana"])
    assert grafana["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert grafana["GF_USERS_ALLOW_SIGN_UP"] == "false"
    match = REQUIRED.match(grafana["GF_SECURITY_ADMIN_PASSWORD"])
    assert match and match.group(1) == "GRAFANA_ADMIN_PASSWORD"


def test_compose_publishes_only_the_ingress_and_a_local_grafana() -> None:
    published = {name: service.get("ports", []) for name, service in compose().items()}
    assert published == {
        "kafka": [], "clickhouse": [], "worker": [], "gateway": ["4317:4317"], "prometheus": [],
        "grafana": ["127.0.0.1:3000:3000"],
    }
    worker = environment(compose()["worker"])
    assert REQUIRED.match(worker["SLUICE_QUERY_ADMIN_TOKEN"])  # its /query (on the network) needs the token


def test_make_secrets_generates_every_required_variable(tmp_path: Path) -> None:
    """Each ${NAME:?} of the compose file is one make-secrets.sh writes: random, 0600, kept."""
    required = set(re.findall(r"\$\{(\w+):\?", (DEPLOY / "docker-compose.yml").read_text()))
    env_file = tmp_path / ".env"
    script = [str(DEPLOY / "make-secrets.sh"), str(env_file)]
    first = subprocess.run(script, capture_output=True, text=True, timeout=10, check=True)
    assert first.stdout.splitlines() == [f"{env_file}: generated {name}" for name in [
        "SLUICE_AUTH_JWT_SECRET", "SLUICE_QUERY_ADMIN_TOKEN", "SLUICE_CLICKHOUSE_PASSWORD",
        "CLICKHOUSE_GRAFANA_PASSWORD", "GRAFANA_ADMIN_PASSWORD"]]
    values = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(values) == required
    assert all(re.fullmatch(r"[A-Za-z0-9]{43}", v) for v in values.values())  # 256 random bits each
    assert len(set(values.values())) == len(values)
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    again = subprocess.run(script, capture_output=True, text=True, timeout=10, check=True)
    assert again.stdout == "" and env_file.read_text().splitlines() == [f"{k}={v}" for k, v in values.items()]
    assert (DEPLOY / ".gitignore").read_text().splitlines()[-1] == ".env"
    assert (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()[-1] == "deploy/.env"  # not in images


def test_kubernetes_ships_no_secret_and_wires_each_key() -> None:
    """No Secret object (a placeholder would be applied as a credential); the manifests and the
    chart's README say how to create it, and the pods read exactly the keys that command creates."""
    assert k8s("Secret") == [] and k8s("Secret", "helm/") == []
    comment = (DEPLOY / "k8s" / "config.yaml").read_text()
    created = set(re.findall(r"--from-literal=(\w+)=", comment))
    assert "kubectl create secret generic sluice-secrets" in comment
    readme = (helm.CHART / "README.md").read_text()
    assert "kubectl create secret generic sluice-secrets" in readme
    assert set(re.findall(r"--from-literal=(\w+)=", readme)) == created
    assert created == {"SLUICE_AUTH_JWT_SECRET", "SLUICE_QUERY_ADMIN_TOKEN", "SLUICE_CLICKHOUSE_PASSWORD",
                       "SLUICE_ENCRYPTION_KEYS"}
    wired: dict[str, set[str]] = {}
    for kind in ("Deployment", "StatefulSet"):
        for doc in k8s(kind):
            (container,) = doc["spec"]["template"]["spec"]["containers"]
            assert [list(source) for source in container["envFrom"]] == [["configMapRef"]]
            refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
            assert all(ref["name"] == "sluice-secrets" and ref["key"] == name for name, ref in refs.items())
            assert {n for n, ref in refs.items() if ref.get("optional")} == {"SLUICE_ENCRYPTION_KEYS"}
            wired[doc["metadata"]["name"]] = set(refs)
    assert wired == {
        "sluice-gateway": {"SLUICE_AUTH_JWT_SECRET", "SLUICE_ENCRYPTION_KEYS"},
        "sluice-worker": created,
    }


@pytest.mark.parametrize("where", KUBERNETES)
def test_kubernetes_services_are_internal_and_carry_no_metrics(where: str) -> None:
    """No LoadBalancer or NodePort; the gateway's Service carries only gRPC (the metrics port,
    bound to the pod's 0.0.0.0, is scraped from the pods, or with the chart's ServiceMonitor
    through a headless Service of its own), the worker's is headless."""
    services = {doc["metadata"]["name"]: doc["spec"] for doc in k8s("Service", where)}
    metrics_only = services.pop("sluice-gateway-metrics", None)
    assert (metrics_only is not None) == (where == "helm/")
    if metrics_only is not None:
        assert metrics_only["clusterIP"] == "None" and [p["name"] for p in metrics_only["ports"]] == ["metrics"]
    assert {name: spec.get("type") for name, spec in services.items()} == {
        "sluice-gateway": "ClusterIP", "sluice-worker": "ClusterIP"
    }
    assert services["sluice-gateway"]["ports"] == [{"name": "grpc", "port": 4317, "targetPort": "grpc"}]
    assert services["sluice-worker"]["clusterIP"] == "None"
    (settings,) = [doc["data"] for doc in k8s("ConfigMap", where) if doc["metadata"]["name"] == "sluice-settings"]
    metrics_port = int(settings["SLUICE_GATEWAY_METRICS_LISTEN"].rsplit(":", 1)[1])
    assert all(metrics_port not in (p["port"], p.get("targetPort")) and p.get("targetPort") != "metrics"
               for spec in services.values() for p in spec["ports"])


def grafana_strings(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for value in node.values():
            yield from grafana_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from grafana_strings(item)
    elif isinstance(node, str):
        yield node


# $name, ${name}, ${name:format}, [[name]]; $__ names are the datasource's macros and Grafana's
# built-in time range, never a user's value.
VARIABLE = re.compile(r"\$\{(\w+)(?::[^}]*)?\}|\$(\w+)|\[\[(\w+)(?::[^\]]*)?\]\]")
SAFE_USE = "decodeURLComponent('${%s:percentencode}')"


def dashboard_targets(kind: str) -> list[dict[str, Any]]:
    """The dashboard's queries of the datasource type ``kind``."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    return [t for p in dashboard["panels"] if p.get("datasource", {}).get("type") == kind for t in p["targets"]]


def test_grafana_dashboard_reads_sluice_tables_and_the_provisioned_datasources() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    provisioned = {
        (d["type"], d["uid"])
        for path in (DEPLOY / "grafana" / "provisioning" / "datasources").iterdir()
        for d in yaml.safe_load(path.read_text())["datasources"]
    }
    assert provisioned == {("grafana-clickhouse-datasource", "sluice-clickhouse"), ("prometheus", "sluice-prometheus")}
    used = {(p["datasource"]["type"], p["datasource"]["uid"]) for p in dashboard["panels"] if p["type"] != "row"}
    used |= {(v["datasource"]["type"], v["datasource"]["uid"]) for v in dashboard["templating"]["list"]}
    assert used == provisioned
    sql = [t["rawSql"] for t in dashboard_targets("grafana-clickhouse-datasource")]
    assert all("sluice." in q for q in sql) and len(sql) == 5
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"


def test_grafana_dashboard_variables_are_values_not_sql() -> None:
    """Every use of a dashboard variable in a query is percent-encoded by Grafana and decoded by
    ClickHouse: the encoded value holds no quote or backslash, so any value, however hostile,
    stays one string literal and compares as itself."""
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "sluice.json").read_text())
    names = {v["name"] for v in dashboard["templating"]["list"]}
    queries = [t["rawSql"] for t in dashboard_targets("grafana-clickhouse-datasource")]
    queries += [v["query"] for v in dashboard["templating"]["list"]]
    uses = [(q, m) for q in queries for m in VARIABLE.finditer(q)]
    user_uses = [(q, m) for q, m in uses if not next(g for g in m.groups() if g).startswith("__")]
    promql = [t["expr"] for t in dashboard_targets("prometheus")]
    # PromQL takes no user variable: only Grafana's own $__rate_interval
    assert len(promql) >= 30 and [e for e in promql if VARIABLE.search(e.replace("$__rate_interval", ""))] == []
    assert len(user_uses) == 8 and {next(g for g in m.groups() if g) for _, m in user_uses} == names
    for query, match in user_uses:
        name = next(g for g in match.groups() if g)
        assert query[match.start() - len("decodeURLComponent('"):match.end() + 2] == SAFE_USE % name, query
    # What Grafana's percentencode makes of hostile values, run through ClickHouse's decoding.
    hostile = ["tenant-a", "\\' OR 1=1 --", "a'); DROP TABLE sluice.logs; --", "ünï\\cödé\"`$x", "%27"]
    encoded = [urllib.parse.quote(value, safe="") for value in hostile]  # = encodeURIComponentStrict
    assert all(re.fullmatch(r"[A-Za-z0-9_.~%-]*", e) for e in encoded)
    sql = " UNION ALL ".join(f"SELECT {i} AS i, " + SAFE_USE.replace("${%s:percentencode}", e) + " AS v"
                             for i, e in enumerate(encoded))
    # Grafana's sqlstring doubles quotes but keeps backslashes, which ClickHouse reads as escapes:
    # this value would read every key's rows.
    sqlstring = "'" + hostile[1].replace("'", "''") + "'"
    leak = f"SELECT count() AS n FROM (SELECT 'tenant-b' AS access_key) WHERE access_key = {sqlstring}"
    program = "import chdb, sys; [print(chdb.query(q, 'JSONEachRow'), end='') for q in sys.argv[1:]]"
    run = subprocess.run(
        [sys.executable, "-c", program, sql + " ORDER BY i", leak],
        capture_output=True, text=True, timeout=60, check=True,
    )
    *decoded, leaked = [json.loads(line) for line in run.stdout.splitlines()]
    assert [row["v"] for row in decoded] == hostile
    assert leaked == {"n": 1}


def test_compose_prometheus_scrapes_every_gateway_and_worker_per_key() -> None:
    """Prometheus finds each gateway's and worker's /metrics by service name (so `--scale` needs
    no change) on the ports they bind on the stack's network, labelled per key for the dashboard."""
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    found = {job["job_name"]: [(sd["names"], sd["type"], sd["port"]) for sd in job["dns_sd_configs"]]
             for job in config["scrape_configs"]}
    services = compose()
    gateway, worker = environment(services["gateway"]), environment(services["worker"])
    host, port = gateway["SLUICE_GATEWAY_METRICS_LISTEN"].rsplit(":", 1)
    assert host == "0.0.0.0" and worker["SLUICE_WORKER_WEB_HOST"] == "0.0.0.0"
    assert "SLUICE_WORKER_WEB_PORT" not in worker
    assert found == {
        "sluice-gateway": [(["gateway"], "A", int(port))],
        "sluice-worker": [(["worker"], "A", WorkerSettings().web_port)],
    }
    assert gateway["SLUICE_METRICS_KEY_LABELS"] == worker["SLUICE_METRICS_KEY_LABELS"] == "true"
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in services["prometheus"]["volumes"]
    assert "prometheus" in services["grafana"]["depends_on"]
