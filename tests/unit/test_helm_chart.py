"""The Helm chart deploy/helm/sluice, rendered offline (``helm template`` when installed, else the
tests' renderer): every object is valid for the pinned Kubernetes version, values change what
they say, and deploy/k8s is the chart rendered with its defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.fixtures import helm

KUBERNETES = "1.33.0"  # the version the manifests are validated against (kubernetes-validate's schemas)
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
EVERYTHING = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}}


def chart(overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's objects: as helm renders them when it is installed, else as the renderer does."""
    rendered = helm.helm_documents(overrides)
    return rendered if rendered is not None else helm.documents(overrides)


def named(docs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def test_deploy_k8s_is_the_chart_rendered_with_its_defaults() -> None:
    expected = helm.generated()
    assert sorted(expected) == ["config.yaml", "gateway.yaml", "worker.yaml"]
    assert {p.name: p.read_text() for p in (DEPLOY / "k8s").iterdir()} == expected, (
        "deploy/k8s is stale: python -m tests.fixtures.helm deploy/k8s")


@pytest.mark.parametrize("overrides", [{}, EVERYTHING], ids=["defaults", "servicemonitor"])
def test_every_manifest_is_valid_for_the_pinned_kubernetes(overrides: dict[str, Any]) -> None:
    docs = chart(overrides)
    assert len(docs) == (9 if not overrides else 12)
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":  # a CRD: no schema in kubernetes-validate
            assert doc["kind"] == "ServiceMonitor" and set(doc["spec"]) == {"selector", "endpoints"}
            continue
        assert kubernetes_validate.validate(doc, KUBERNETES, strict=True) == KUBERNETES[:4]


def test_an_invalid_manifest_is_caught() -> None:
    (deployment,) = [d for d in helm.documents() if d["kind"] == "Deployment"]
    deployment["spec"]["replica"] = 2  # a typo strict validation refuses
    with pytest.raises(kubernetes_validate.ValidationError, match="replica"):
        kubernetes_validate.validate(deployment, KUBERNETES, strict=True)


def test_the_servicemonitors_scrape_each_component_on_its_metrics_port() -> None:
    objects = named(chart(EVERYTHING))
    services = {name: doc for (kind, name), doc in objects.items() if kind == "Service"}
    for component, port in (("gateway", "metrics"), ("worker", "http")):
        monitor = objects[("ServiceMonitor", f"sluice-{component}")]
        assert monitor["metadata"]["labels"]["release"] == "prometheus"
        assert monitor["spec"]["endpoints"] == [{"port": port, "path": "/metrics", "interval": "15s"}]
        selected = [s for s in services.values()
                    if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        assert len(selected) == 1 and selected[0]["spec"]["clusterIP"] == "None"
        assert [p["name"] for p in selected[0]["spec"]["ports"]] == [port]
        (pod_selector,) = [s["spec"]["selector"] for s in selected]
        assert pod_selector == {"app": f"sluice-{component}"}


def test_values_set_what_they_say() -> None:
    objects = named(chart({
        "kafka": {"partitions": 48}, "worker": {"replicas": 12, "port": 7000},
        "image": {"repository": "registry.example/sluice", "tag": "0.1.0"}, "secretName": "prod-secrets",
        "settings": {"SLUICE_CLICKHOUSE_CLUSTER": "sluice",
                     "SLUICE_CLICKHOUSE_SHARD_URLS": '["http://ch-0:8123","http://ch-1:8123"]'},
        "gateway": {"autoscaling": {"maxReplicas": 40}},
    }))
    settings = objects[("ConfigMap", "sluice-settings")]["data"]
    assert settings["SLUICE_KAFKA_PARTITIONS"] == "48" and settings["SLUICE_WORKER_WEB_PORT"] == "7000"
    assert settings["SLUICE_CLICKHOUSE_SHARD_URLS"] == '["http://ch-0:8123","http://ch-1:8123"]'
    worker = objects[("StatefulSet", "sluice-worker")]
    assert worker["spec"]["replicas"] == 12
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["image"] == "registry.example/sluice:0.1.0"
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]} == {"prod-secrets"}
    assert objects[("Service", "sluice-worker")]["spec"]["ports"] == [{"name": "http", "port": 7000}]
    assert objects[("HorizontalPodAutoscaler", "sluice-gateway")]["spec"]["maxReplicas"] == 40
    assert "replicas" not in objects[("Deployment", "sluice-gateway")]["spec"]  # the HPA's


def test_the_default_workers_split_the_partitions_evenly() -> None:
    values = yaml.safe_load((helm.CHART / "values.yaml").read_text())
    partitions, workers = values["kafka"]["partitions"], values["worker"]["replicas"]
    assert workers <= partitions and partitions % workers == 0


def test_every_value_is_documented() -> None:
    """Each top-level key of values.yaml has a comment above it; a nested key has one above it
    or on its line, or follows its parent or a sibling directly (the block's comment covers it)."""
    lines = (helm.CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_]\w*):", line)
        if not m or "#" in line:
            continue
        above = lines[i - 1].strip() if i else ""
        nested_in_block = bool(m.group(1)) and re.match(r"^\s*[A-Za-z_]\w*:", lines[i - 1]) is not None
        if not above.startswith("#") and not nested_in_block:
            undocumented.append(m.group(2))
    assert undocumented == []


def test_the_renderer_refuses_templates_outside_its_subset(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    (tmp_path / "Chart.yaml").write_text("name: x\nversion: 0.1.0\nappVersion: '1'\n")
    (tmp_path / "values.yaml").write_text("a: {b: 1}\n")
    (tmp_path / "templates" / "x.yaml").write_text("v: {{ include \"x\" . }}\n")
    with pytest.raises(ValueError, match="unsupported"):
        helm.render(chart=tmp_path)
    (tmp_path / "templates" / "x.yaml").write_text(
        "{{- if .Values.a.b }}\nv: {{ .Values.a.b | quote }}\n{{- else }}\nv: none\n{{- end }}\n"
        "m:\n  {{- toYaml .Values.a | nindent 2 }}\n{{- range $k, $v := .Values.a }}\n{{ $k }}: {{ $v }}\n{{- end }}\n"
    )
    assert helm.render(chart=tmp_path) == [("x.yaml", '\nv: "1"\nm:\n  b: 1\nb: 1\n')]
    assert helm.render({"a": {"b": 0}}, chart=tmp_path) == [("x.yaml", "\nv: none\nm:\n  b: 0\nb: 0\n")]


@pytest.mark.parametrize("overrides", [{}, EVERYTHING], ids=["defaults", "servicemonitor"])
def test_helm_renders_what_the_renderer_does(overrides: dict[str, Any]) -> None:
    """Where Helm is installed (its binary, or its Go SDK from the helm-python-sdk package), it
    renders the same objects, and the SDK the same text, as the tests' renderer."""
    rendered = helm.helm_documents(overrides)
    if rendered is None:
        pytest.skip("neither helm nor helm-python-sdk is installed: the chart is rendered by the tests' renderer only")
    assert sorted(map(str, rendered)) == sorted(map(str, helm.documents(overrides)))
    texts = helm.helm_sdk_render(overrides)
    if texts is not None:
        assert texts == helm.render(overrides)
