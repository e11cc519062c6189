"""Offline checks of the Kubernetes manifests (deploy/k8s), as CI runs them.

Every overlay is rendered with ``kubectl kustomize``, validated against the Kubernetes JSON
schemas (kubernetes-validate; custom resources skipped by kind and printed), scanned by
checkov with the Containerfile (findings must be the accepted ones of
deploy/k8s/checkov-accepted.yaml), and then
checked for the properties the operations issue asks for. The tools live in their own
virtualenv, .venv-tools/, installed by tools/k8s-tools (which this module runs first: a
missing tool is a failure, never a skip). The Kamailio configuration is checked by
``kamailio -c`` (Debian's kamailio, from tools/test-packages).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from plateau_contracts.topics import Topic
from plateau_runtime.services import SERVICES

# The first run installs the tools (a few minutes on a cold machine); later runs take seconds.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(1200)]

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("single-node", "production")
TOOLS_VENV = Path(os.environ.get("PLATEAU_TOOLS_VENV", ROOT / ".venv-tools"))
KUBERNETES_VERSION = "1.33.0"  # the oldest Kubernetes the manifests are written for

#: Kinds of the operators' custom resources: kubernetes-validate has no schema for them.
#: Any other kind without a schema (a typo such as "Deploymnet") fails the validation test.
CUSTOM_KINDS = {
    "Kafka (kafka.strimzi.io/v1)",
    "KafkaNodePool (kafka.strimzi.io/v1)",
    "KafkaTopic (kafka.strimzi.io/v1)",
    "Cluster (postgresql.cnpg.io/v1)",
    "ScheduledBackup (postgresql.cnpg.io/v1)",
    "ObjectStore (barmancloud.cnpg.io/v1)",
    "ServiceMonitor (monitoring.coreos.com/v1)",
    "PodMonitor (monitoring.coreos.com/v1)",
}
WORKLOADS = ("Deployment", "StatefulSet", "Job", "CronJob")
LONG_RUNNING = ("Deployment", "StatefulSet")
SECRET_LIKE = ("PASSWORD", "SECRET", "KEY", "TOKEN")


@dataclass(frozen=True)
class Rendered:
    """One overlay rendered: the YAML file and its objects."""

    overlay: str
    path: Path
    objects: list[dict[str, Any]]

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in kinds]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{self.overlay}: expected one {kind}/{name}, found {len(found)}"
        return found[0]


def _run(command: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
    )


@pytest.fixture(scope="module")
def tools() -> Path:
    """The tools' virtualenv, installed (or confirmed current) by tools/k8s-tools."""
    done = _run(["bash", str(ROOT / "tools" / "k8s-tools")], timeout=1200)
    if done.returncode != 0:
        pytest.fail(f"tools/k8s-tools failed (a missing tool fails these checks):\n{done.stderr}")
    for tool in ("kubectl", "checkov", "python"):
        assert (TOOLS_VENV / "bin" / tool).exists(), f"{tool} missing from {TOOLS_VENV}"
    return TOOLS_VENV / "bin"


@pytest.fixture(scope="module")
def rendered(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    """Every overlay rendered by ``kubectl kustomize`` into its own file."""
    out = tmp_path_factory.mktemp("k8s-rendered")
    result: dict[str, Rendered] = {}
    for overlay in OVERLAYS:
        done = _run([str(tools / "kubectl"), "kustomize", str(K8S / "overlays" / overlay)], 120)
        assert done.returncode == 0, f"kubectl kustomize {overlay} failed:\n{done.stderr}"
        path = out / f"{overlay}.yaml"
        path.write_text(done.stdout)
        objects = [o for o in yaml.safe_load_all(done.stdout) if o]
        assert objects, f"{overlay} rendered no object"
        result[overlay] = Rendered(overlay, path, objects)
    return result


@pytest.fixture(params=OVERLAYS)
def each(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    pod: dict[str, Any] = spec["template"]["spec"]
    return pod


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    pod = _pod_spec(workload)
    return list(pod.get("initContainers", [])) + list(pod["containers"])


def _label(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- schemas, policy scanner -------------------------------------------------------------


def test_every_overlay_validates_against_the_kubernetes_schemas(
    tools: Path, rendered: dict[str, Rendered]
) -> None:
    files = [str(r.path) for r in rendered.values()]
    validator = ROOT / "tools" / "k8s_validate.py"
    command = [str(tools / "python"), str(validator), "--kubernetes", KUBERNETES_VERSION]
    done = _run([*command, *files], timeout=300)
    assert done.stdout, f"the validator printed nothing:\n{done.stderr}"
    report = json.loads(done.stdout)
    print(f"validated {report['checked']} objects against Kubernetes {KUBERNETES_VERSION}")
    print("skipped by kind (custom resources, no schema offline):")
    for kind, names in sorted(report["skipped"].items()):
        print(f"  {kind}: {', '.join(names)}")
    assert report["invalid"] == [], "invalid objects:\n" + "\n".join(report["invalid"])
    assert done.returncode == 0, done.stderr
    unexpected = set(report["skipped"]) - CUSTOM_KINDS
    assert not unexpected, (
        f"kinds without a schema that are not known custom resources: {unexpected}"
    )
    total = sum(len(r.objects) for r in rendered.values())
    skipped = sum(len(names) for names in report["skipped"].values())
    assert report["checked"] + skipped == total


def test_checkov_finds_nothing_beyond_the_accepted_findings(
    tools: Path, rendered: dict[str, Rendered], tmp_path: Path
) -> None:
    for r in rendered.values():
        shutil.copy(r.path, tmp_path / r.path.name)
    # checkov knows the image's build file by Docker's name only.
    shutil.copy(ROOT / "Containerfile", tmp_path / "Dockerfile")
    done = _run(
        [
            str(tools / "checkov"),
            *("--directory", str(tmp_path), "--framework", "kubernetes", "dockerfile"),
            *("--quiet", "--compact", "--output", "json", "--skip-download"),
        ],
        timeout=600,
        cwd=tmp_path,
    )
    assert done.stdout.strip(), f"checkov printed nothing (exit {done.returncode}):\n{done.stderr}"
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    scanned = {r["check_type"] for r in reports if r["summary"]["passed"] > 0}
    assert scanned == {"kubernetes", "dockerfile"}, f"checkov scanned only {scanned}"
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
    findings = {
        (f["check_id"], f["resource"]) for r in reports for f in r["results"]["failed_checks"]
    }
    accepted = yaml.safe_load((K8S / "checkov-accepted.yaml").read_text())["accepted"]
    for entry in accepted:
        assert len(entry.get("reason", "").split()) >= 10, f"{entry['check']} needs a reason"

    def covered(check: str, resource: str) -> bool:
        return any(
            e["check"] == check and ("*" in e["resources"] or resource in e["resources"])
            for e in accepted
        )

    unaccepted = sorted(f for f in findings if not covered(*f))
    assert unaccepted == [], (
        "checkov findings not accepted in checkov-accepted.yaml:\n"
        + "\n".join(f"{check} {resource}" for check, resource in unaccepted)
    )
    for entry in accepted:
        used = {r for c, r in findings if c == entry["check"]}
        assert used, f"{entry['check']} is accepted but no longer found: remove it"
        if "*" not in entry["resources"]:
            stale = set(entry["resources"]) - used
            assert not stale, f"{entry['check']} accepted for {stale}, which no longer fail"


# --- properties of the workloads ---------------------------------------------------------


def test_every_workload_has_limits_and_a_locked_down_security_context(each: Rendered) -> None:
    workloads = each.of_kind(*WORKLOADS)
    assert workloads
    for workload in workloads:
        pod = _pod_spec(workload)
        where = f"{each.overlay} {_label(workload)}"
        assert pod.get("automountServiceAccountToken") is False, where
        pod_security = pod.get("securityContext", {})
        assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for container in _containers(workload):
            at = f"{where} container {container['name']}"
            resources = container.get("resources", {})
            for key in ("cpu", "memory"):
                assert key in resources.get("limits", {}), f"{at}: no {key} limit"
                assert key in resources.get("requests", {}), f"{at}: no {key} request"
            security = container.get("securityContext", {})
            non_root = security.get("runAsNonRoot", pod_security.get("runAsNonRoot"))
            assert non_root is True, f"{at}: may run as root"
            assert security.get("readOnlyRootFilesystem") is True, f"{at}: writable root"
            assert security.get("allowPrivilegeEscalation") is False, at
            assert security.get("capabilities", {}).get("drop") == ["ALL"], at
            tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1, f"{at}: /tmp is not a volume"
            assert "emptyDir" in volumes[tmp[0]["name"]], f"{at}: /tmp is not an emptyDir"


def test_long_running_workloads_have_probes_anti_affinity_and_a_budget(each: Rendered) -> None:
    budgets = {
        tuple(sorted(p["spec"]["selector"]["matchLabels"].items()))
        for p in each.of_kind("PodDisruptionBudget")
    }
    for workload in each.of_kind(*LONG_RUNNING):
        where = f"{each.overlay} {_label(workload)}"
        for container in _containers(workload):
            assert "livenessProbe" in container, f"{where}: no liveness probe"
            assert "readinessProbe" in container, f"{where}: no readiness probe"
        selector = tuple(sorted(workload["spec"]["selector"]["matchLabels"].items()))
        assert selector in budgets, f"{where}: no PodDisruptionBudget"
        replicas = workload["spec"].get("replicas", 1)
        if replicas > 1:
            anti = _pod_spec(workload).get("affinity", {}).get("podAntiAffinity")
            assert anti, f"{where}: {replicas} replicas without pod anti-affinity"


def test_each_service_runs_its_package_with_grpc_probes_on_its_port(each: Rendered) -> None:
    workloads = {w["metadata"]["name"]: w for w in each.of_kind(*LONG_RUNNING)}
    for spec in SERVICES:
        assert spec.name in workloads, f"{each.overlay}: no workload for {spec.name}"
        (container,) = _containers(workloads[spec.name])
        assert container["command"] == ["python", "-m", spec.package]
        env = {e["name"]: e for e in container["env"]}
        assert env["PLATEAU_GRPC_PORT"]["value"] == str(spec.grpc_port)
        assert env["PLATEAU_GRPC_HOST"]["value"] == "0.0.0.0"
        assert env["PLATEAU_DATABASE_URL"]["value"].startswith(
            f"postgresql://plateau_{spec.schema}:$(PLATEAU_DB_PASSWORD)@"
        )
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == spec.grpc_port, f"{spec.name} {probe}"


def test_each_service_has_a_migration_job(each: Rendered) -> None:
    jobs = {j["metadata"]["name"]: j for j in each.of_kind("Job")}
    for spec in SERVICES:
        (container,) = _containers(jobs[f"migrate-{spec.name}"])
        assert container["command"] == ["plateau", "migrate", "--service", spec.name]
        env = {e["name"]: e for e in container["env"]}
        password = env[f"PLATEAU_{spec.schema.upper()}_DB_PASSWORD"]
        assert password["valueFrom"]["secretKeyRef"]["name"] == "plateau-db-passwords"


def test_secrets_are_referenced_never_embedded(each: Rendered) -> None:
    with_data = [_label(s) for s in each.of_kind("Secret") if s.get("data") or s.get("stringData")]
    assert with_data == [], f"{each.overlay}: Secrets with data in the manifests: {with_data}"
    for workload in each.of_kind(*WORKLOADS):
        for container in _containers(workload):
            texts = [(v["name"], v["value"]) for v in container.get("env", []) if "value" in v] + [
                ("argument", a) for a in container.get("args", [])
            ]
            for name, value in texts:
                where = f"{each.overlay} {_label(workload)}: {name}"
                # A path to a mounted Secret is fine; a secret itself is not.
                if any(word in name for word in SECRET_LIKE) and not name.endswith("_FILE"):
                    assert value.startswith("$(") or not value, f"{where} has a literal value"
                # Credentials inside a URL come from a Secret through $(VARIABLE).
                if "://" in value and "@" in value:
                    credentials = value.split("://", 1)[1].split("@", 1)[0]
                    assert ":$(" in credentials, f"{where} embeds a password in {value}"


def test_every_variable_reference_names_a_variable_defined_before_it(each: Rendered) -> None:
    """Kubernetes leaves ``$(NAME)`` as it is when NAME is not defined earlier in ``env``,
    so a typo would reach the program as a literal (a database URL with "$(PASWORD)")."""
    for workload in each.of_kind(*WORKLOADS):
        for container in _containers(workload):
            where = f"{each.overlay} {_label(workload)} {container['name']}"
            defined: set[str] = set()
            for variable in container.get("env", []):
                for name in _REFERENCE.findall(variable.get("value", "")):
                    assert name in defined, f"{where}: {variable['name']} uses undefined {name}"
                defined.add(variable["name"])
            for text in container.get("command", []) + container.get("args", []):
                for name in _REFERENCE.findall(text):
                    assert name in defined, f"{where}: argument {text!r} uses undefined {name}"


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def test_backups_are_scheduled_with_a_key_from_a_secret(each: Rendered) -> None:
    cron = each.one("CronJob", "plateau-backup")
    (container,) = _containers(cron)
    assert container["command"][:4] == ["plateau", "backup", "--output", "/backups"]
    assert "--keep" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["PLATEAU_BACKUP_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "plateau-backup"
    scheduled = each.one("ScheduledBackup", "plateau-pg-nightly")["spec"]
    assert scheduled["cluster"]["name"] == "plateau-pg"
    plugin = "barman-cloud.cloudnative-pg.io"
    assert (scheduled["method"], scheduled["pluginConfiguration"]["name"]) == ("plugin", plugin)
    (archiver,) = each.one("Cluster", "plateau-pg")["spec"]["plugins"]
    assert (archiver["name"], archiver["isWALArchiver"]) == (plugin, True)
    store = each.one("ObjectStore", archiver["parameters"]["barmanObjectName"])["spec"]
    credentials = store["configuration"]["s3Credentials"]
    assert {ref["name"] for ref in credentials.values()} == {"plateau-pg-backup"}
    assert store["retentionPolicy"]


# --- network policies --------------------------------------------------------------------


def test_every_namespace_denies_by_default(each: Rendered) -> None:
    namespaces = {o["metadata"]["namespace"] for o in each.objects if o["kind"] != "Namespace"}
    assert namespaces == {"plateau"}, f"{each.overlay}: objects outside plateau: {namespaces}"
    assert {n["metadata"]["name"] for n in each.of_kind("Namespace")} == namespaces
    for namespace in namespaces:
        deny = [
            p
            for p in each.of_kind("NetworkPolicy")
            if p["metadata"]["namespace"] == namespace
            and p["spec"]["podSelector"] == {}
            and sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"]
            and not p["spec"].get("ingress")
            and not p["spec"].get("egress")
        ]
        assert deny, f"{each.overlay}: namespace {namespace} has no default-deny policy"


def test_network_policies_select_pods_that_exist(each: Rendered) -> None:
    """A policy whose selector matches no pod allows nothing: usually a renamed label."""
    pod_labels = [_pod_labels(w) for w in each.of_kind(*WORKLOADS)]
    operator_pods = ("strimzi.io/cluster", "cnpg.io/cluster")  # labelled by the operators
    for policy in each.of_kind("NetworkPolicy"):
        selector = policy["spec"]["podSelector"]
        wanted = selector.get("matchLabels", {})
        if any(key in wanted for key in operator_pods):
            continue
        matches = [labels for labels in pod_labels if _selects(selector, labels)]
        assert matches, f"{each.overlay} NetworkPolicy/{policy['metadata']['name']} selects no pod"


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    labels: dict[str, str] = spec["template"]["metadata"]["labels"]
    return labels


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expression in selector.get("matchExpressions", []):
        assert expression["operator"] == "In", "only In expressions are used here"
        if labels.get(expression["key"]) not in expression["values"]:
            return False
    return True


def test_only_the_sip_edge_and_https_accept_traffic_from_outside(each: Rendered) -> None:
    """Ingress from any address (an ipBlock) is DESIGN §2's edges only: SIP 5060 on the
    gateway or Kamailio, HTTPS 8443 on the access gateway; every other ingress names pods."""
    edges = {("sip-gateway", "UDP", 5060), ("sip-gateway", "TCP", 5060)}
    edges |= {("kamailio", "UDP", 5060), ("kamailio", "TCP", 5060)}
    edges |= {("access-gateway", "TCP", 8443)}
    opened = set()
    for policy in each.of_kind("NetworkPolicy"):
        target = policy["spec"]["podSelector"].get("matchLabels", {})
        for rule in policy["spec"].get("ingress", []):
            if not any("ipBlock" in peer for peer in rule.get("from", [{}])):
                assert rule.get("from"), f"{policy['metadata']['name']}: ingress from anyone"
                continue
            for port in rule["ports"]:
                name = target.get("app.kubernetes.io/name", "?")
                opened.add((name, port["protocol"], port["port"]))
    assert opened <= edges, f"{each.overlay}: opened to the outside: {opened - edges}"
    behind_the_edge = {("sip-gateway", "UDP", 5060), ("sip-gateway", "TCP", 5060)}
    in_front = {("kamailio", "UDP", 5060), ("kamailio", "TCP", 5060)}
    # Production: only Kamailio faces the outside; the replicas believe the source it
    # reports, so nothing else may reach their SIP port.
    expected = edges - behind_the_edge if each.overlay == "production" else edges - in_front
    assert opened == expected


def test_dns_and_the_design_flows_are_allowed(each: Rendered) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in each.of_kind("NetworkPolicy")}
    dns = policies["allow-dns"]
    assert dns["podSelector"] == {}
    assert {(p["protocol"], p["port"]) for p in dns["egress"][0]["ports"]} == {
        ("UDP", 53),
        ("TCP", 53),
    }
    gateway_in = policies["sip-gateway-ingress"]["ingress"]
    assert {(p["protocol"], p["port"]) for p in gateway_in[0]["ports"]} == {
        ("UDP", 5060),
        ("TCP", 5060),
    }
    call_control_clients = {
        peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for peer in gateway_in[1]["from"]
    }
    # The replicas forward a call's requests to the one that holds it.
    assert call_control_clients == {"acd", "dialer", "sip-gateway"}
    callers = policies["routing-to-call-control"]["podSelector"]["matchExpressions"][0]
    assert set(callers["values"]) == call_control_clients
    egress_ports = {
        port["port"] for rule in policies["services-egress"]["egress"] for port in rule["ports"]
    }
    assert egress_ports == {9092, 5432, 4317}


# --- Kafka, PostgreSQL, scaling, the SIP edge ---------------------------------------------


def test_one_topic_per_contract_topic_with_unlimited_retention(each: Rendered) -> None:
    topics = {t["metadata"]["name"]: t["spec"] for t in each.of_kind("KafkaTopic")}
    assert set(topics) == {topic.value for topic in Topic}
    brokers = each.one("KafkaNodePool", "dual-role")["spec"]["replicas"]
    kafka = each.one("Kafka", "plateau")["spec"]["kafka"]["config"]
    expected = {"single-node": (1, 1, 1), "production": (3, 3, 2)}[each.overlay]
    assert (brokers, kafka["default.replication.factor"], kafka["min.insync.replicas"]) == (
        expected
    )
    for name, spec in topics.items():
        assert spec["config"]["retention.ms"] == -1, name
        assert spec["replicas"] == expected[1], name
        assert spec["config"]["min.insync.replicas"] == expected[2], name
        assert spec["replicas"] <= brokers


def test_replicas_and_autoscaling_per_overlay(each: Rendered) -> None:
    names = {spec.name for spec in SERVICES}
    replicas = {
        w["metadata"]["name"]: w["spec"].get("replicas", 1)
        for w in each.of_kind(*LONG_RUNNING)
        if w["metadata"]["name"] in names
    }
    instances = each.one("Cluster", "plateau-pg")["spec"]["instances"]
    autoscaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in each.of_kind("HorizontalPodAutoscaler")
    }
    if each.overlay == "single-node":
        assert set(replicas.values()) == {1}
        assert instances == 1
        assert autoscaled == set()
    else:
        assert min(replicas.values()) >= 2, replicas
        assert instances == 3
        assert autoscaled == {"access-gateway", "stats-projector"}


def test_the_sip_edge_keeps_the_source_address_and_a_call_on_one_replica(
    each: Rendered,
) -> None:
    edge = each.one("Service", "sip-edge")["spec"]
    assert edge["type"] == "LoadBalancer"
    assert edge["externalTrafficPolicy"] == "Local"
    assert {(p["protocol"], p["port"]) for p in edge["ports"]} == {("UDP", 5060), ("TCP", 5060)}
    gateways = each.one("StatefulSet", "sip-gateway")["spec"]["replicas"]
    target = edge["selector"]["app.kubernetes.io/name"]
    if gateways == 1:
        assert target == "sip-gateway"
        return
    assert target == "kamailio", "several gateway replicas need the dispatcher in front"
    (config,) = [
        c for c in each.of_kind("ConfigMap") if c["metadata"]["name"].startswith("kamailio-config")
    ]
    assert 'ds_select_dst("1", "0")' in config["data"]["kamailio.cfg"]  # hash over Call-ID
    destinations = [
        line.split()[1]
        for line in config["data"]["dispatcher.list"].splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert destinations == [
        f"sip:sip-gateway-{i}.sip-gateway-pods:5060" for i in range(gateways)
    ], "dispatcher.list must name every gateway replica"

    # Each replica behind the edge: its own pod address in Via and Contact, the edge's
    # reported source believed, requests outside a dialog through the edge's replicas'
    # socket (a name kamailio.cfg knows as its own), and a stable name the other replicas
    # forward its calls' CallControl requests to.
    (container,) = each.one("StatefulSet", "sip-gateway")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    names = [e["name"] for e in container["env"]]
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["PLATEAU_SIP_ADVERTISED_HOST"] == {
        "name": "PLATEAU_SIP_ADVERTISED_HOST",
        "value": "$(POD_IP)",
    }
    assert names.index("POD_IP") < names.index("PLATEAU_SIP_ADVERTISED_HOST")
    assert env["PLATEAU_SIP_TRUSTED_PROXIES"]["valueFrom"]["configMapKeyRef"]["key"]
    proxy = env["PLATEAU_SIP_OUTBOUND_PROXY"]["value"]
    assert proxy == "sip:kamailio-replicas:5080"
    service = each.one("Service", "kamailio-replicas")["spec"]
    assert service["selector"] == {"app.kubernetes.io/name": "kamailio"}
    assert {(p["protocol"], p["port"]) for p in service["ports"]} == {
        ("UDP", 5080),
        ("TCP", 5080),
    }
    assert "alias=kamailio-replicas:5080" in config["data"]["kamailio.cfg"]
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["PLATEAU_SIP_REPLICA"]["value"] == "$(POD_NAME)"
    assert env["PLATEAU_SIP_REPLICA_ADDRESS"]["value"] == "$(POD_NAME).sip-gateway-pods:50051"
    assert names.index("POD_NAME") < names.index("PLATEAU_SIP_REPLICA")


@pytest.fixture(scope="module")
def kamailio() -> Iterator[str]:
    found = shutil.which("kamailio") or (
        "/usr/sbin/kamailio" if Path("/usr/sbin/kamailio").exists() else None
    )
    if found is None:
        pytest.fail("kamailio is missing: tools/test-packages installs it (Debian's kamailio)")
    yield found


def test_the_kamailio_configuration_passes_kamailio_check(kamailio: str, tmp_path: Path) -> None:
    source = K8S / "components" / "sip-dispatcher"
    listing = tmp_path / "dispatcher.list"
    listing.write_text("1 sip:127.0.0.1:5070 0 0\n")
    config = tmp_path / "kamailio.cfg"
    text = (source / "kamailio.cfg").read_text()
    assert text.count("/etc/kamailio/dispatcher.list") == 1
    config.write_text(text.replace("/etc/kamailio/dispatcher.list", str(listing)))
    # The pod's own address (both sockets listen on it); loopback here.
    environment = {**os.environ, "SIP_ADVERTISED_HOST": "192.0.2.10", "POD_IP": "127.0.0.1"}
    done = _run([kamailio, "-c", "-f", str(config)], timeout=60, env=environment)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "config file ok" in output
    broken = tmp_path / "broken.cfg"
    broken.write_text(config.read_text().replace("ds_select_dst(", "ds_select_dstt(", 1))
    done = _run([kamailio, "-c", "-f", str(broken)], timeout=60, env=environment)
    assert done.returncode != 0, "kamailio -c accepted a call to an unknown function"
