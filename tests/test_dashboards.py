"""grafana/: dashboards valid for Grafana's schemas, queries that parse as PromQL
and name only metrics pcpd.exporter emits, provisioning files, and (with
Prometheus installed) every query answered by a real
Prometheus scraping a real run and a virtual-time run.

The Grafana schemas are vendored in grafana/schemas/ (see its README for their
origin and licence).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import promql_parser
import pytest
from jsonschema import Draft7Validator
from prometheus_client import CollectorRegistry

from pcpd.exporter import PcpdCollector
from pcpd.kernel_exporter import KernelCollector
from pcpd.model.arena import Arena, Geometry

REPO = Path(__file__).parents[1]
GRAFANA = REPO / "grafana"
SCHEMAS = GRAFANA / "schemas"
DASHBOARD_FILES = sorted((GRAFANA / "dashboards").glob("*.json"))
DASHBOARD_IDS = [p.name for p in DASHBOARD_FILES]
# What Grafana puts in place of its variables before a query leaves for Prometheus.
GRAFANA_VARS = {"__rate_interval": "15s", "__interval": "5s", "__range": "1m",
                "job": ".*", "instance": ".*", "policy": ".*", "mode": ".*", "kernel_job": ".*",
                "kernel_instance": ".*"}
PANEL_SCHEMAS = ("timeseries", "stat", "bargauge", "heatmap", "table")


def expand(expr: str) -> str:
    """A dashboard query as Grafana sends it ($1 in label_replace stays)."""
    return re.sub(r"\$(\w+)", lambda m: GRAFANA_VARS.get(m[1], m[0]), expr)


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard.get("panels", []):
        out.append(panel)
        out.extend(panel.get("panels", []))          # panels inside a row
    return out


def queries(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, expr) of every query target."""
    return [(p.get("title", ""), t["expr"]) for p in panels(dashboard) for t in p.get("targets", [])]


def schema(name: str, definition: str) -> Draft7Validator:
    document = json.loads((SCHEMAS / f"{name}.jsonschema.json").read_text())
    return Draft7Validator({"$ref": f"#/definitions/{definition}", "definitions": document["definitions"]})


def errors(validator: Draft7Validator, instance: object) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(instance)]


@pytest.fixture(scope="module")
def emitted() -> tuple[set[str], set[str]]:
    """Sample names and label names the real collectors emit: pcpd run's and pcpd simulate's (its
    virtual clock), in both label modes, and pcpd kernel-exporter's over this machine's /proc."""
    arena = Arena.create(Geometry(pages=512, record_bytes=64, ncpus=2, ring_slots=8))
    try:
        names, labels = set(), {"job", "instance", "le"}
        for per_cpu in (False, True):
            registry = CollectorRegistry()
            registry.register(PcpdCollector(arena, {"policy": "legacy", "era": "6.7", "record_bytes": "64",
                                                    "config": "soak", "mode": "virtual", "version": "0"},
                                            per_cpu=per_cpu, virtual_time=lambda: 0.0))
            for family in registry.collect():
                for sample in family.samples:
                    names.add(sample.name)
                    labels.update(sample.labels)
        for family in KernelCollector().collect():
            for sample in family.samples:
                names.add(sample.name)
                labels.update(sample.labels)
        return names, labels
    finally:
        arena.close()
        arena.unlink()


def build_module():
    spec = importlib.util.spec_from_file_location("grafana_build", GRAFANA / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------
# The files.

def test_the_five_dashboards_exist_with_unique_uids():
    assert DASHBOARD_IDS == ["pcpd-buddy.json", "pcpd-overview.json", "pcpd-pcp.json",
                             "pcpd-policies.json", "pcpd-workers.json"]
    uids = [load(p)["uid"] for p in DASHBOARD_FILES]
    assert len(set(uids)) == len(uids)
    assert all(8 <= len(uid) <= 40 for uid in uids)


def test_dashboards_are_what_build_py_writes():
    build = build_module()
    for name, make in build.DASHBOARDS.items():
        assert (GRAFANA / "dashboards" / name).read_text() == build.render(make), \
            f"{name} is out of date: run python grafana/build.py"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_dashboard_validates_against_grafana_schema(path):
    assert errors(schema("dashboard", "Dashboard"), load(path)) == []


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_panels_and_targets_validate_against_plugin_schemas(path):
    target_schema = schema("prometheus", "Dataquery")
    problems = []
    for panel in panels(load(path)):
        if panel["type"] == "row":
            continue
        assert panel["type"] in PANEL_SCHEMAS, panel["type"]
        problems += [f"{panel['title']}: options {e}" for e in errors(schema(panel["type"], "Options"),
                                                                      panel["options"])]
        custom = panel["fieldConfig"]["defaults"].get("custom")
        if custom is not None:
            problems += [f"{panel['title']}: custom {e}" for e in errors(schema(panel["type"], "FieldConfig"),
                                                                         custom)]
        for target in panel["targets"]:
            problems += [f"{panel['title']}: target {e}" for e in errors(target_schema, target)]
    assert problems == []


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_datasource_is_the_template_variable(path):
    dashboard = load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    refs = [p["datasource"] for p in panels(dashboard) if "datasource" in p]
    refs += [t["datasource"] for p in panels(dashboard) for t in p.get("targets", [])]
    refs += [v["datasource"] for v in variables.values() if "datasource" in v]
    assert refs and all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs)


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_panels_fit_the_grid_without_overlap(path):
    cells = set()
    for panel in panels(load(path)):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, panel["title"]
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


# ---------------------------------------------------------------------------
# The queries.

def test_expand_fills_grafana_variables_but_not_regex_groups():
    assert expand('label_replace(x{job=~"$job"}[$__rate_interval], "s", "0$1", "s", "(.)")') == \
        'label_replace(x{job=~".*"}[15s], "s", "0$1", "s", "(.)")'


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_queries_parse_and_name_only_emitted_metrics_and_labels(path, emitted):
    names, labels = emitted
    labels = labels | {"policy", "era", "config", "record_bytes", "mode", "version"}   # pcpd_info's, joined in
    dashboard = load(path)
    assert queries(dashboard)
    for title, expr in queries(dashboard):
        try:
            ast = promql_parser.parse(expand(expr))
        except ValueError as err:
            pytest.fail(f"{path.name}: {title}: {expr}: {err}")
        used_names: list[str] = []
        used_labels: list[str] = []

        def visit(node, used_names=used_names, used_labels=used_labels):
            if isinstance(node, promql_parser.VectorSelector):
                used_names.append(node.name)
                used_labels.extend(m.name for m in node.matchers.matchers)
            elif isinstance(node, promql_parser.AggregateExpr) and node.modifier is not None:
                used_labels.extend(node.modifier.labels)
            elif isinstance(node, promql_parser.BinaryExpr) and node.modifier is not None:
                if node.modifier.matching is not None:
                    used_labels.extend(node.modifier.matching.labels)
                used_labels.extend(node.modifier.group_labels or [])

        promql_parser.walk(ast, visit)
        assert used_names, f"{title}: no metric"
        for name in used_names:
            assert name in names, f"{path.name}: {title}: {name} is not emitted by pcpd"
        for label in used_labels:
            assert label in labels, f"{path.name}: {title}: no metric has a {label!r} label"


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=DASHBOARD_IDS)
def test_variable_queries_name_emitted_metrics(path, emitted):
    for variable in load(path)["templating"]["list"]:
        if variable["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((\w+)(\{.*\})?, (\w+)\)", variable["query"])
        assert match, variable["query"]
        assert match[1] in emitted[0]


def test_rate_windows_use_grafana_rate_interval():
    for path in DASHBOARD_FILES:
        for title, expr in queries(load(path)):
            for window in re.findall(r"\}\[([^\]]+)\]", expr):     # range selectors
                assert window in ("$__rate_interval", "$__range", "5m"), f"{path.name}: {title}: [{window}]"


# ---------------------------------------------------------------------------
# Provisioning and Prometheus.

def test_provisioning_points_grafana_at_the_dashboards_and_prometheus():
    yaml = pytest.importorskip("yaml")
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/pcpd.yaml").read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"] == "$PCPD_DASHBOARDS"
    sources = yaml.safe_load((GRAFANA / "provisioning/datasources/pcpd.yaml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://127.0.0.1:9090"
    config = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["static_configs"] == [{"targets": ["127.0.0.1:9464"]}]
    assert source["jsonData"]["timeInterval"] == config["global"]["scrape_interval"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs prometheus)")
@pytest.mark.parametrize("name", ["prometheus.yml", "prometheus-fleet.yml"])
def test_prometheus_configs_pass_promtool(name):
    done = subprocess.run(["promtool", "check", "config", str(GRAFANA / name)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_fleet_targets_files_match_their_jobs_globs():
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((GRAFANA / "prometheus-fleet.yml").read_text())
    ports = {"pcpd": "9464", "pcpd-kernel": "9465"}     # run's and kernel-exporter's defaults
    for job in config["scrape_configs"]:
        (sd,) = job["file_sd_configs"]
        files = [p for pattern in sd["files"] for p in GRAFANA.glob(pattern)]
        assert files, f"{job['job_name']}: no example targets file matches {sd['files']}"
        for path in files:
            for group in json.loads(path.read_text()):
                assert set(group) <= {"targets", "labels"} and group["targets"]
                assert all(t.rpartition(":")[2] == ports[job["job_name"]] for t in group["targets"])


# ---------------------------------------------------------------------------
# Every dashboard query against a real Prometheus scraping a real `pcpd run`.

DEADLINE_S = 90


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def wait_for(what: str, check, procs: dict[Path, subprocess.Popen]):
    """Poll ``check`` until it returns something truthy; fail at the deadline or if a process died.

    ``procs`` maps each process's log file to the process.
    """
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        for log, proc in procs.items():
            if proc.poll() is not None:
                pytest.fail(f"{proc.args[0]} exited with {proc.returncode} while waiting for {what}: "
                            f"{log.read_text()[-2000:]}")
        value = check()
        if value:
            return value
        time.sleep(0.2)                     # polling interval, not a synchronisation
    pytest.fail(f"no {what} within {DEADLINE_S} s")


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="prometheus not installed (Debian package prometheus; .ci/run installs it)")
def test_every_dashboard_query_returns_data_from_a_real_prometheus(tmp_path):
    """pcpd run, pcpd simulate --listen (stopped by ^C: its arena goes with it) and kernel-exporter."""
    exporter_port, kernel_port, prometheus_port = free_port(), free_port(), free_port()
    simulate_port = free_port()
    cpus = sorted(os.sched_getaffinity(0))[:2]
    config = tmp_path / "pcpd.toml"
    config.write_text(f"""\
name = "dashboards"
duration = 300
cpus = {cpus}

[arena]
memory = "64MiB"

[exporter]
address = "127.0.0.1:{exporter_port}"
""")
    (tmp_path / "prometheus.yml").write_text(f"""\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: pcpd
    static_configs:
      - targets: ["127.0.0.1:{exporter_port}", "127.0.0.1:{simulate_port}"]
  - job_name: pcpd-kernel
    static_configs:
      - targets: ["127.0.0.1:{kernel_port}"]
""")
    pcpd_log, prometheus_log = tmp_path / "pcpd.log", tmp_path / "prometheus.log"
    with open(pcpd_log, "w") as out:
        pcpd = subprocess.Popen([sys.executable, "-m", "pcpd", "run", str(config)], cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT)
    simulate_log = tmp_path / "simulate.log"
    with open(simulate_log, "w") as out:           # far more operations than the test lasts
        simulate = subprocess.Popen([sys.executable, "-m", "pcpd", "simulate", str(config), "--ops", "100000000",
                                     "--out", str(tmp_path / "simulate"), "--listen", f"127.0.0.1:{simulate_port}"],
                                    cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    kernel_log = tmp_path / "kernel-exporter.log"
    with open(kernel_log, "w") as out:
        kernel = subprocess.Popen([sys.executable, "-m", "pcpd", "kernel-exporter", "--address",
                                   f"127.0.0.1:{kernel_port}"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    with open(prometheus_log, "w") as out:
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prometheus_port}"],
            stdout=out, stderr=subprocess.STDOUT)
    procs = {pcpd_log: pcpd, simulate_log: simulate, kernel_log: kernel, prometheus_log: prometheus}
    api = f"http://127.0.0.1:{prometheus_port}/api/v1"
    try:
        def ready() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/-/ready", timeout=5) as r:
                    return r.status == 200
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        def target_up() -> bool:
            targets = get_json(f"{api}/targets")
            return bool(targets) and all(t["health"] == "up" for t in targets["data"]["activeTargets"]) \
                and len(targets["data"]["activeTargets"]) == 3

        wait_for("ready pcpd exporter", ready, procs)
        wait_for("pcpd, pcpd simulate and kernel-exporter targets up in Prometheus", target_up, procs)
        for path in DASHBOARD_FILES:
            dashboard = load(path)
            exprs = [expr for _, expr in queries(dashboard)]
            exprs += [re.sub(r"label_values\((\w+(?:\{.*\})?), \w+\)", r"\1", v["query"])
                      for v in dashboard["templating"]["list"] if v["type"] == "query"]
            for expr in exprs:
                url = f"{api}/query?" + urllib.parse.urlencode({"query": expand(expr)})

                def answered(url: str = url) -> dict | None:
                    reply = get_json(url)
                    assert reply is None or reply["status"] == "success", reply
                    return reply if reply and reply["data"]["result"] else None

                wait_for(f"data for {path.name}: {expr}", answered, procs)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT if proc is simulate else signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
