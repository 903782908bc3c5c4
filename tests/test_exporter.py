"""pcpd.exporter: the collector over a real arena, and the HTTP server.

Two workers are simulated by filling two stats blocks in one process (or by
running two real CpuAllocators over one arena and folding their counters);
worker processes are real child processes.  Each test builds its own
registry and reads values with ``registry.get_sample_value``.
"""

from __future__ import annotations

import gzip
import http.client
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pcpd.config.load import parse_settings
from pcpd.errors import PcpdError, UsageError
from pcpd.exporter import (
    STAT_FAMILIES,
    UNEXPORTED_STATS,
    MetricsServer,
    PcpdCollector,
    parse_address,
    start_exporter,
    unusable_free_index,
)
from pcpd.model import stats
from pcpd.model.arena import C_PID, C_RESTARTS, H_AUDIT_FAILURES, H_AUDIT_OK, H_AUDIT_RUNS, H_RESTARTS, Arena, Geometry
from pcpd.model.stats import INDEX
from pcpd.model.zone import MIGRATE_RECLAIMABLE
from pcpd.model.zonewords import Z_CLAIMS, Z_FREE_PAGES, Z_NR_FREE, Z_STEALS, Z_WMARK_LOW
from pcpd.simulate.engine import Simulation
from workers.cpu import CpuAllocator, ModelSpec, SharedLocks, create_arena
from workers.policies import PolicyOptions

DOCS = Path(__file__).parents[1] / "docs" / "metrics.md"
INFO = {"policy": "memdesc", "era": "6.7", "record_bytes": "16", "config": "soak"}


@pytest.fixture
def arena():
    """A formatted 2-CPU arena of 2048 pages (every page free)."""
    arena = create_arena(ModelSpec(pages=2048, record_bytes=64, policy="legacy", ncpus=2), ring_slots=8)
    yield arena
    arena.close()
    arena.unlink()


def registry_for(arena: Arena, per_cpu: bool = False, cpus=None) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(PcpdCollector(arena, INFO, per_cpu=per_cpu, cpus=cpus))
    return registry


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


@pytest.fixture
def sleeper():
    """A real worker-like child process; yields it once it has used some CPU and blocked
    once (a sleep is a voluntary context switch: without it the child could print
    "ready" before it had any)."""
    child = subprocess.Popen([sys.executable, "-c",
                              "import time; sum(range(3_000_000)); time.sleep(0.001); "
                              "print('ready', flush=True); time.sleep(60)"],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "ready\n"
    yield child
    child.kill()
    child.wait()
    child.stdout.close()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------
# Stats blocks -> families.

def test_counter_adds_every_cpu_and_the_retired_block(arena):
    arena.stats[0, INDEX["alloc_hit"]] = 5
    arena.stats[1, INDEX["alloc_hit"]] = 7
    arena.stats[2, INDEX["alloc_hit"]] = 100            # retired: workers that were replaced
    assert value(registry_for(arena), "pcpd_pcp_allocations_total", result="hit") == 112


def test_gauge_sums_live_cpus_only(arena):
    arena.stats[0, INDEX["pcp_pages"]] = 30
    arena.stats[1, INDEX["pcp_pages"]] = 12
    arena.stats[2, INDEX["pcp_pages"]] = 999            # a gauge is never retired; ignore junk there
    assert value(registry_for(arena), "pcpd_pcp_pages") == 42


def test_maxima_take_the_largest_including_retired(arena):
    arena.stats[0, INDEX["lock_waiters_max"]] = 2
    arena.stats[1, INDEX["lock_waiters_max"]] = 1
    arena.stats[2, INDEX["lock_waiters_max"]] = 3
    assert value(registry_for(arena), "pcpd_zone_lock_waiters_max") == 3


def test_batch_is_the_largest_not_the_sum(arena):
    arena.stats[0, INDEX["pcp_batch"]] = 63
    arena.stats[1, INDEX["pcp_batch"]] = 63
    assert value(registry_for(arena), "pcpd_pcp_batch_pages") == 63


def test_nanoseconds_are_exposed_as_seconds(arena):
    arena.stats[0, INDEX["lock_hold_ns"]] = 1_500_000_000
    arena.stats[1, INDEX["lock_hold_max_ns"]] = 250_000
    registry = registry_for(arena)
    assert value(registry, "pcpd_zone_lock_hold_seconds_total") == pytest.approx(1.5)
    assert value(registry, "pcpd_zone_lock_hold_max_seconds") == pytest.approx(250e-6)


def test_allocation_grid_labels_memdesc_and_order(arena):
    arena.stats[1, stats.alloc_index(stats.MEMDESC_TYPES.index("slab"), 3)] = 9
    registry = registry_for(arena)
    assert value(registry, "pcpd_allocations_total", memdesc="slab", order="3") == 9
    assert value(registry, "pcpd_allocations_total", memdesc="slab", order="2") == 0


def test_cachelines_by_memory_cause_and_access(arena):
    arena.stats[0, INDEX["lines_written_tail_undo"]] = 4
    arena.stats[0, INDEX["lines_read_tail_undo"]] = 3
    arena.stats[1, INDEX["desc_lines_read"]] = 2
    arena.stats[1, INDEX["data_lines_written"]] = 1
    registry = registry_for(arena)
    assert value(registry, "pcpd_cachelines_total", memory="struct_page", cause="tail_undo", access="write") == 4
    assert value(registry, "pcpd_cachelines_total", memory="struct_page", cause="tail_undo", access="read") == 3
    assert value(registry, "pcpd_cachelines_total", memory="descriptor", cause="descriptor", access="read") == 2
    assert value(registry, "pcpd_cachelines_total", memory="free_memory", cause="list_link", access="write") == 1


def test_lock_wait_histogram_is_cumulative_in_seconds(arena):
    arena.stats[0, stats.LOCK_WAIT_BUCKET + 0] = 3          # <= 1.024 us
    arena.stats[1, stats.LOCK_WAIT_BUCKET + 2] = 4          # <= 16.384 us
    arena.stats[2, stats.LOCK_WAIT_BUCKET + len(stats.LOCK_WAIT_BUCKETS)] = 1    # retired, > 1.07 s
    arena.stats[0, INDEX["lock_wait_ns"]] = 2_000_000_000
    registry = registry_for(arena)
    assert value(registry, "pcpd_zone_lock_wait_seconds_bucket", le="1.024e-06") == 3
    assert value(registry, "pcpd_zone_lock_wait_seconds_bucket", le="4.096e-06") == 3
    assert value(registry, "pcpd_zone_lock_wait_seconds_bucket", le="1.6384e-05") == 7
    assert value(registry, "pcpd_zone_lock_wait_seconds_bucket", le="1.073741824") == 7
    assert value(registry, "pcpd_zone_lock_wait_seconds_bucket", le="+Inf") == 8
    assert value(registry, "pcpd_zone_lock_wait_seconds_count") == 8
    assert value(registry, "pcpd_zone_lock_wait_seconds_sum") == pytest.approx(2.0)


def test_per_cpu_labels_name_cpus_and_sum_to_the_default(arena):
    rng = np.random.default_rng(7)
    arena.stats[:, :stats.NR_STATS] = rng.integers(0, 1000, size=(3, stats.NR_STATS))
    summed, split = registry_for(arena), registry_for(arena, per_cpu=True, cpus=[4, 7])
    assert value(split, "pcpd_frees_total", cpu="4", memdesc="anon") == arena.stats[0, INDEX["free_type_anon"]]
    assert value(split, "pcpd_frees_total", cpu="7", memdesc="anon") == arena.stats[1, INDEX["free_type_anon"]]
    assert value(split, "pcpd_frees_total", cpu="retired", memdesc="anon") == arena.stats[2, INDEX["free_type_anon"]]
    assert value(split, "pcpd_pcp_pages", cpu="retired") is None
    parts: dict = {}
    for family in split.collect():
        for sample in family.samples:
            if "cpu" in sample.labels:
                key = (sample.name, frozenset((k, v) for k, v in sample.labels.items() if k != "cpu"))
                parts[key] = parts.get(key, 0) + sample.value
    maxima = {"pcpd_pcp_batch_pages", "pcpd_zone_lock_wait_max_seconds", "pcpd_zone_lock_hold_max_seconds",
              "pcpd_zone_lock_waiters_max"}
    compared = 0
    for family in summed.collect():
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            if key in parts and sample.name not in maxima:
                assert parts[key] == pytest.approx(sample.value), key
                compared += 1
    assert compared > 150


def test_cpus_must_match_the_arena(arena):
    with pytest.raises(ValueError, match="3 CPUs for an arena of 2 slots"):
        PcpdCollector(arena, INFO, cpus=[0, 1, 2])


def test_every_stats_counter_is_exported_or_explained():
    exported = {stat for family in STAT_FAMILIES for _, stat in family.series}
    assert not exported & set(UNEXPORTED_STATS)
    assert exported | set(UNEXPORTED_STATS) == set(stats.NAMES)


def test_refills_by_memdesc_add_up_to_refills_in_a_real_run(arena):
    locks = SharedLocks.local()
    spec = ModelSpec(pages=2048, record_bytes=64, policy="legacy", ncpus=2)
    cpus = [CpuAllocator(arena, spec, locks, cpu) for cpu in range(2)]
    held = []
    for i in range(2000):                        # two CPUs allocating and freeing, orders 0-3
        cpu = cpus[i % 2]
        if i % 3 == 2 and held:
            owner, pfn, order, t = held.pop(0)
            owner.policy.free(pfn, order, t)
            continue
        t, order = i % len(stats.MEMDESC_TYPES), i % 4
        pfn = cpu.policy.alloc(t, order)
        if pfn >= 0:
            held.append((cpu, pfn, order, t))
    for cpu in cpus:
        cpu.policy.publish_gauges()
        cpu.counters.fold(arena.stats[cpu.cpu])
    registry = registry_for(arena)
    by_type = sum(value(registry, "pcpd_pcp_refills_total", memdesc=t) for t in stats.MEMDESC_TYPES)
    assert by_type == sum(c.counters["refills"] for c in cpus) > 0
    # buddyinfo counts the same free pages as NR_FREE_PAGES
    free = sum(value(registry, "pcpd_buddyinfo_blocks", node="0", zone="Normal", size=str(o)) * (1 << o)
               for o in stats.ORDERS)
    assert free == value(registry, "pcpd_zone_free_pages") == arena.zone[Z_FREE_PAGES] < 2048
    # and the four page states add up to the zone
    states = sum(value(registry, n) for n in ("pcpd_zone_free_pages", "pcpd_pcp_pages",
                                              "pcpd_inflight_pages", "pcpd_allocated_pages"))
    assert states == value(registry, "pcpd_zone_managed_pages") == 2048


# ---------------------------------------------------------------------------
# Zone words, header words.

def test_buddyinfo_and_pagetypeinfo_read_the_free_lists(arena):
    # a fresh zone: two order-10 blocks, on the Movable lists
    registry = registry_for(arena)
    assert value(registry, "pcpd_buddyinfo_blocks", node="0", zone="Normal", size="10") == 2
    assert value(registry, "pcpd_buddyinfo_blocks", node="0", zone="Normal", size="0") == 0
    assert value(registry, "pcpd_pagetypeinfo_blocks", node="0", zone="Normal", migratetype="Movable",
                 size="10") == 2
    assert value(registry, "pcpd_pagetypeinfo_blocks", node="0", zone="Normal", migratetype="Unmovable",
                 size="10") == 0
    arena.zone[Z_NR_FREE + 3 * 2 + MIGRATE_RECLAIMABLE] = 5
    assert value(registry_for(arena), "pcpd_pagetypeinfo_blocks", node="0", zone="Normal",
                 migratetype="Reclaimable", size="2") == 5


def test_unusable_free_index_follows_the_kernel_formula():
    # 2 order-0 blocks and 1 order-2 block: 6 free pages
    blocks = np.array([2, 0, 1] + [0] * 8)
    index = unusable_free_index(blocks)
    assert index[0] == 0
    assert index[1] == pytest.approx(2 / 6)        # (6 - (2 << 1)) / 6
    assert index[2] == pytest.approx(2 / 6)        # (6 - (1 << 2)) / 6
    assert index[3] == 1
    assert unusable_free_index(np.zeros(11, dtype=int)) == [0.0] * 11


def test_zone_counters_and_watermarks(arena):
    arena.zone[Z_CLAIMS], arena.zone[Z_STEALS] = 3, 4
    registry = registry_for(arena)
    assert value(registry, "pcpd_zone_fallbacks_total", kind="claim") == 3
    assert value(registry, "pcpd_zone_fallbacks_total", kind="steal") == 4
    assert value(registry, "pcpd_zone_watermark_pages", level="low") == arena.zone[Z_WMARK_LOW] > 0


def test_audit_and_restarts_come_from_the_header(arena):
    registry = registry_for(arena)
    assert value(registry, "pcpd_audit_ok") == -1            # never run
    arena.header[H_AUDIT_OK], arena.header[H_AUDIT_RUNS], arena.header[H_AUDIT_FAILURES] = 0, 5, 1
    arena.header[H_RESTARTS] = 3
    arena.cpuctl[0, C_RESTARTS], arena.cpuctl[1, C_RESTARTS] = 1, 2
    assert value(registry, "pcpd_audit_ok") == 0
    assert value(registry, "pcpd_audit_runs_total") == 5
    assert value(registry, "pcpd_audit_failures_total") == 1
    assert value(registry, "pcpd_worker_restarts_total") == 3
    assert value(registry_for(arena, per_cpu=True), "pcpd_worker_restarts_total", cpu="1") == 2


def test_info_metric(arena):
    assert value(registry_for(arena), "pcpd_info", **INFO) == 1


def test_virtual_time_is_a_counter_of_virtual_runs_only(arena):
    assert value(registry_for(arena), "pcpd_virtual_time_seconds_total") is None
    clock = [0.25]
    registry = CollectorRegistry()
    registry.register(PcpdCollector(arena, {**INFO, "mode": "virtual"}, virtual_time=lambda: clock[0]))
    assert value(registry, "pcpd_virtual_time_seconds_total") == 0.25
    clock[0] = 1.5                                          # read at every scrape
    assert value(registry, "pcpd_virtual_time_seconds_total") == 1.5
    assert value(registry, "pcpd_info", **INFO, mode="virtual") == 1


# ---------------------------------------------------------------------------
# Worker processes.

def test_worker_process_metrics_follow_the_pid_in_its_slot(arena, sleeper):
    registry = registry_for(arena, per_cpu=True)
    assert value(registry, "pcpd_workers", cpu="0") == 0
    arena.cpuctl[0, C_PID] = sleeper.pid
    assert value(registry, "pcpd_workers", cpu="0") == 1
    assert value(registry, "pcpd_workers", cpu="1") == 0
    assert value(registry, "pcpd_worker_resident_memory_bytes", cpu="0") > 1 << 20
    user = value(registry, "pcpd_worker_cpu_seconds_total", cpu="0", mode="user")
    assert user > 0
    assert value(registry, "pcpd_worker_context_switches_total", cpu="0", kind="voluntary") >= 1
    # the worker dies and its pid stays in the slot: skipped, and its time is kept
    sleeper.kill()
    sleeper.wait()
    assert value(registry, "pcpd_workers", cpu="0") == 0
    assert value(registry, "pcpd_worker_cpu_seconds_total", cpu="0", mode="user") == user
    # a new worker in the slot carries on from there: the counter never goes back
    arena.cpuctl[0, C_PID] = os.getpid()
    assert value(registry, "pcpd_worker_cpu_seconds_total", cpu="0", mode="user") > user
    assert value(registry, "pcpd_workers", cpu="0") == 1


def test_vanished_pid_is_skipped_not_an_error(arena):
    arena.cpuctl[0, C_PID] = dead_pid()
    arena.cpuctl[1, C_PID] = os.getpid()
    registry = registry_for(arena)
    assert value(registry, "pcpd_workers") == 1
    assert value(registry, "pcpd_worker_resident_memory_bytes") > 0


# ---------------------------------------------------------------------------
# Registration and the exposition.

def test_describe_names_what_collect_yields(arena):
    for per_cpu in (False, True):
        collector = PcpdCollector(arena, INFO, per_cpu=per_cpu)
        described = collector.describe()
        assert all(not family.samples for family in described)
        assert [f.name for f in described] == [f.name for f in collector.collect()]


def test_a_second_collector_on_one_registry_is_refused_at_register(arena):
    registry = registry_for(arena)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        registry.register(PcpdCollector(arena, INFO))


def test_docs_describe_every_metric(arena):
    docs = DOCS.read_text()
    for family in PcpdCollector(arena, INFO, virtual_time=float).describe():
        name = family.name + ("_total" if family.type == "counter" else "")
        name = name + "_info" if family.type == "info" else name
        assert f"`{name}`" in docs, f"{name} is missing from docs/metrics.md"


@pytest.fixture
def arena64():
    """64 CPU slots, every stats word filled."""
    arena = Arena.create(Geometry(pages=512, record_bytes=64, ncpus=64, ring_slots=8))
    arena.stats[:, :stats.NR_STATS] = np.random.default_rng(1).integers(0, 10**9, size=(65, stats.NR_STATS))
    yield arena
    arena.close()
    arena.unlink()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs prometheus)")
@pytest.mark.parametrize("per_cpu", [False, True], ids=["summed", "per-cpu"])
def test_promtool_accepts_the_exposition_of_64_cpus(arena64, per_cpu):
    text = generate_latest(registry_for(arena64, per_cpu=per_cpu))
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert done.stdout + done.stderr == b""
    series = sum(1 for line in text.decode().splitlines() if line and not line.startswith("#"))
    assert series > (10_000 if per_cpu else 200)


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs prometheus)")
@pytest.mark.parametrize("per_cpu", [False, True], ids=["summed", "per-cpu"])
def test_promtool_accepts_what_a_virtual_run_serves(per_cpu):
    """A pcpd simulate run's /metrics, scraped as its counters are final."""
    text = (Path(__file__).parent / "data" / "results" / "tiny.toml").read_text()
    settings = parse_settings(text + f"\n[exporter]\nper_cpu = {str(per_cpu).lower()}\n", "tiny.toml",
                              available_cpus=range(2))
    simulation = Simulation(settings, "memdesc", 1024, listen="127.0.0.1:0")
    pages = []

    def scrape(done: int, total: int) -> None:
        if done == total:
            with urllib.request.urlopen(f"http://{simulation.exporter.address}/metrics", timeout=5) as answer:
                pages.append(answer.read())

    simulation.run(scrape)
    (page,) = pages
    assert b'mode="virtual"' in page and b"pcpd_virtual_time_seconds_total " in page
    done = subprocess.run(["promtool", "check", "metrics"], input=page, capture_output=True)
    assert done.returncode == 0, (done.stdout + done.stderr).decode()
    assert done.stdout + done.stderr == b""


# ---------------------------------------------------------------------------
# The HTTP server.

@pytest.fixture
def server(arena):
    state = {"ready": False}
    with MetricsServer(registry_for(arena), "127.0.0.1", 0, ready=lambda: state["ready"]) as srv:
        srv.state = state
        yield srv


def get(srv: MetricsServer, path: str, headers: dict | None = None,
        method: str = "GET") -> tuple[int, dict, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        connection.request(method, path, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def test_metrics_endpoint_serves_the_text_format(server):
    status, headers, body = get(server, "/metrics")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name for f in text_string_to_metric_families(body.decode())}
    assert {"pcpd_allocations", "pcpd_buddyinfo_blocks", "pcpd_zone_lock_wait_seconds", "pcpd_info"} <= families


def test_openmetrics_when_asked(server):
    status, headers, body = get(server, "/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


def test_gzip_when_accepted(server):
    status, headers, body = get(server, "/metrics", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers["Content-Encoding"] == "gzip"
    assert b"pcpd_allocations_total" in gzip.decompress(body)


def test_gzip_only_when_accepted_and_worth_it(server):
    status, headers, body = get(server, "/metrics")
    assert status == 200 and "Content-Encoding" not in headers and b"pcpd_info" in body
    # a body of 1 KiB or less goes as it is, whatever the client accepts
    status, headers, body = get(server, "/-/healthy", {"Accept-Encoding": "gzip"})
    assert (status, body) == (200, b"pcpd is Healthy.\n") and "Content-Encoding" not in headers


def test_head_sends_the_headers_of_get_without_the_body(server):
    for path in ("/metrics", "/-/healthy", "/-/ready", "/nowhere"):
        status, headers, body = get(server, path, method="HEAD")
        got = get(server, path)
        assert (status, headers["Content-Type"]) == (got[0], got[1]["Content-Type"])
        assert body == b""
    assert get(server, "/-/healthy", method="HEAD")[1]["Content-Length"] == str(len(b"pcpd is Healthy.\n"))


def test_health_and_readiness(server):
    assert get(server, "/-/healthy")[::2] == (200, b"pcpd is Healthy.\n")
    assert get(server, "/-/ready")[::2] == (503, b"pcpd is not ready.\n")
    server.state["ready"] = True
    status, headers, body = get(server, "/-/ready")
    assert (status, body) == (200, b"pcpd is Ready.\n")
    assert headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize("path", ["/", "/metrics/", "/-/reload", "/favicon.ico", "/%00"])
def test_other_paths_are_404(server, path):
    assert get(server, path)[0] == 404


def test_malformed_requests_get_400_and_the_server_lives_on(server):
    for junk in (b"GARBAGE\r\n\r\n", b"GET /metrics HTTP/9.9\r\n\r\n", b"\x00\xff\r\n\r\n",
                 b"GET " + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n"):
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(junk)
            reply = s.recv(64)
        assert reply.split(b" ")[1] in (b"400", b"414", b"505"), reply
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.close()                                   # a client that says nothing at all
    assert get(server, "/-/healthy")[0] == 200


def test_many_concurrent_scrapes(server):
    results, lock = [], threading.Lock()

    def scrape():
        for _ in range(5):
            status, _, body = get(server, "/metrics")
            with lock:
                results.append((status, b"pcpd_info" in body))

    threads = [threading.Thread(target=scrape) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [(200, True)] * 80


def test_a_failing_scrape_answers_500_and_the_server_lives_on(arena):
    with MetricsServer(registry_for(arena), "127.0.0.1", 0) as srv:
        stats = arena.stats
        del arena.stats                               # as if the arena were closed under the server
        try:
            status, _, body = get(srv, "/metrics")
        finally:
            arena.stats = stats
        assert status == 500 and body.startswith(b"error:")
        assert get(srv, "/metrics")[0] == 200


def test_bound_port_and_address(arena):
    with MetricsServer(registry_for(arena), "127.0.0.1", 0) as srv:
        assert srv.port > 0 and srv.address == f"127.0.0.1:{srv.port}"
        with urllib.request.urlopen(f"http://{srv.address}/-/healthy") as response:
            assert response.status == 200
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://{srv.address}/-/healthy", timeout=5)
    srv.stop()                                         # idempotent


def test_ipv6_loopback(arena):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        srv = start_exporter(arena, "[::1]:0", INFO)
    except PcpdError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    try:
        assert srv.address.startswith("[::1]:")
        with urllib.request.urlopen(f"http://{srv.address}/metrics") as response:
            assert b"pcpd_info" in response.read()
    finally:
        srv.stop()


def test_a_busy_port_is_a_pcpd_error(arena):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(PcpdError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            start_exporter(arena, f"127.0.0.1:{port}", INFO)


def test_start_exporter_serves_per_cpu_series_with_cpu_numbers(arena):
    arena.stats[1, INDEX["free_pcp"]] = 6
    srv = start_exporter(arena, "127.0.0.1:0", INFO, per_cpu=True, cpus=[2, 3])
    try:
        status, _, body = get(srv, "/metrics")
    finally:
        srv.stop()
    assert status == 200
    assert b'pcpd_pcp_frees_total{cpu="3",result="pcp"} 6.0' in body


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("[::1]:0", ("::1", 0)),
    ("localhost:65535", ("localhost", 65535)),
])
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", ":9464", "host:", "host:http", "host:65536", ""])
def test_parse_address_rejects(text):
    with pytest.raises(UsageError, match="is not host:port"):
        parse_address(text)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
def test_no_control_by_http(server, method):
    """Drains, reloads and stops are signals or local commands, never HTTP."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(f"{method} /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
        status = s.recv(64).split(b" ")[1]
    assert status in (b"404", b"405", b"501")
    assert get(server, "/-/healthy")[0] == 200


# ---------------------------------------------------------------------------
# PCP auto-tuning: one gauge per CPU in both label modes.

def test_tuning_gauges_carry_a_cpu_label_in_both_modes(arena):
    for slot, (high, free_count, alloc_factor) in enumerate(((3548, 63, 2), (4000, 0, 0))):
        arena.stats[slot, INDEX["pcp_high"]] = high
        arena.stats[slot, INDEX["pcp_free_count"]] = free_count
        arena.stats[slot, INDEX["pcp_alloc_factor"]] = alloc_factor
    arena.stats[2, INDEX["pcp_high"]] = 999              # the retired block holds no gauge
    for registry in (registry_for(arena, cpus=[4, 7]), registry_for(arena, per_cpu=True, cpus=[4, 7])):
        assert value(registry, "pcpd_pcp_high_pages", cpu="4") == 3548
        assert value(registry, "pcpd_pcp_high_pages", cpu="7") == 4000
        assert value(registry, "pcpd_pcp_free_count_pages", cpu="4") == 63
        assert value(registry, "pcpd_pcp_alloc_factor", cpu="4") == 2
        assert value(registry, "pcpd_pcp_alloc_factor", cpu="7") == 0
        assert value(registry, "pcpd_pcp_high_pages") is None
        assert value(registry, "pcpd_pcp_high_pages", cpu="retired") is None
    # the other families keep their mode: summed here
    assert value(registry_for(arena), "pcpd_pcp_pages") == 0


def test_a_cpu_with_one_pcp_per_memdesc_type_sums_high_and_free_count_and_takes_the_largest_alloc_factor():
    spec = ModelSpec(pages=4096, record_bytes=16, policy="memdesc", ncpus=1,
                     options=PolicyOptions(memdesc_high="per-type"))
    arena = create_arena(spec, ring_slots=8)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        types = ("anon", "slab", "pagetable")
        blocks = [(cpu.policy.alloc(stats.MEMDESC_TYPES.index(t), 0), stats.MEMDESC_TYPES.index(t))
                  for _ in range(200) for t in types]
        for pfn, t in blocks[:300]:
            cpu.policy.free(pfn, 0, t)
        pcps = cpu.policy.pcps
        pcps[0].alloc_factor, pcps[1].alloc_factor = 1, 3     # as refill-starved PCPs have them
        cpu.policy.publish_gauges()
        cpu.counters.fold(arena.stats[0])
        registry = registry_for(arena)
        assert sum(p.high > 0 for p in pcps) >= 2 and sum(p.free_count > 0 for p in pcps) >= 2
        assert value(registry, "pcpd_pcp_high_pages", cpu="0") == sum(p.high for p in pcps)
        assert value(registry, "pcpd_pcp_free_count_pages", cpu="0") == sum(p.free_count for p in pcps)
        assert value(registry, "pcpd_pcp_alloc_factor", cpu="0") == 3
    finally:
        arena.close()
        arena.unlink()


def test_before_6_7_a_cpu_publishes_its_largest_free_factor_not_a_sum_of_shifts():
    spec = ModelSpec(pages=4096, record_bytes=16, policy="memdesc", era="5.14", ncpus=1,
                     options=PolicyOptions(memdesc_high="per-type"))
    arena = create_arena(spec, ring_slots=8)
    try:
        cpu = CpuAllocator(arena, spec, SharedLocks.local(), 0)
        pcps = cpu.policy.pcps
        pcps[0].free_count, pcps[1].free_count = 1, 3      # free_factor: batch << 1, batch << 3
        cpu.policy.publish_gauges()
        cpu.counters.fold(arena.stats[0])
        assert value(registry_for(arena), "pcpd_pcp_free_count_pages", cpu="0") == 3
    finally:
        arena.close()
        arena.unlink()
