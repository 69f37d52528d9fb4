"""deploy/'s monitoring: the alert rules pass Prometheus's own checker and their unit tests (promtool, from
Debian's prometheus package), every expression of the rules and the dashboard names only metrics CBR exports, and
the compose file, the scrape config and Grafana's provisioning agree with each other."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import REGISTRY

import cbr_common.metrics  # noqa: F401 - registers the catalog

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
SERVICES = ("vault", "backup", "policy", "replication", "worker")
# What the issue asks alerts for: a failed backup, a resource without a recent one, a full vault or store, a
# worker gone, replication lagging.
REQUIRED_ALERTS = {"CbrBackupFailed", "CbrNoRecentBackup", "CbrVaultNearlyFull", "CbrStoreNearlyFull",
                   "CbrWorkerDown", "CbrReplicationLagging"}


def exported() -> set[str]:
    """Every series name the processes can serve: CBR's catalog (as samples are named) and Prometheus's `up`."""
    names = {"up"}
    for family in REGISTRY.collect():
        if not family.name.startswith("cbr_"):
            continue
        suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def named_metrics(expr: str) -> set[str]:
    """The metric names an expression reads: CBR's, and `up`."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return set(re.findall(r"\bcbr_\w+", without_strings)) | ({"up"} if re.search(r"\bup\b", without_strings) else set())


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool missing: install Debian's prometheus package (`make ceph-packages` as root does)"
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=120, cwd=PROMETHEUS)


@pytest.fixture(scope="module")
def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_promtool_accepts_the_rules_and_the_config():
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_each_alert_fires_on_its_unit_test_series():
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_the_rules_are_complete_and_name_only_exported_metrics(rules):
    assert REQUIRED_ALERTS <= {rule["alert"] for rule in rules}
    catalog = exported()
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        metrics = named_metrics(str(rule["expr"]))
        assert metrics and metrics <= catalog, (rule["alert"], metrics - catalog)
    tested = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    assert {case["alertname"] for test in tested["tests"] for case in test["alert_rule_test"]} == {
        rule["alert"] for rule in rules} - {"CbrJobQueueStuck", "CbrServiceDown", "CbrOutboxBacklog",
                                            "CbrSchedulerLagging"}  # the plain thresholds need no unit test


def test_the_dashboard_reads_only_exported_metrics_from_the_provisioned_source():
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "cbr.json").read_text())
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    catalog = exported()
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == uid, panel["title"]
        for target in panel["targets"]:
            metrics = named_metrics(target["expr"])
            assert metrics and metrics <= catalog, (panel["title"], metrics - catalog)
    # Every figure the issue names has a panel.
    read = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    for name in ("cbr_jobs_total", "cbr_job_duration_seconds_bucket", "cbr_backup_read_bytes_total",
                 "cbr_backup_stored_bytes_total", "cbr_restore_written_bytes_total", "cbr_job_queue_depth",
                 "cbr_job_queue_oldest_age_seconds", "cbr_outbox_backlog", "cbr_scheduler_lag_seconds",
                 "cbr_vault_used_bytes", "cbr_rpc_calls_total", "cbr_rpc_duration_seconds_bucket",
                 "cbr_replication_lag_seconds"):
        assert name in read, name


def test_compose_scrape_config_and_grafana_agree():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job["dns_sd_configs"][0] for job in config["scrape_configs"]}
    assert set(jobs) == {f"cbr-{name}" for name in SERVICES}
    for name in SERVICES:
        env = services[name]["environment"]
        port = int(env["CBR_METRICS_ADDR"].rsplit(":", 1)[1])
        assert env["CBR_METRICS_ADDR"] == f"0.0.0.0:{port}"
        assert jobs[f"cbr-{name}"]["names"] == [name] and jobs[f"cbr-{name}"]["port"] == port
    assert config["rule_files"] == ["alerts.yml"]

    prometheus = services["prometheus"]
    command = prometheus["command"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in command
    assert "./prometheus:/etc/prometheus:ro" in prometheus["volumes"]

    grafana = services["grafana"]
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "cbr.yml").read_text())
    assert f"./grafana/dashboards:{provider['providers'][0]['options']['path']}:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    source = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text())
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
