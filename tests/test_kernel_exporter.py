"""pcpd.kernel_exporter: the running kernel's PCP state as pcpd_kernel_* metrics.

A fake /proc tree (a real 6.18 zoneinfo capture, buddyinfo and vmstat lines)
gives exact values; the real /proc of this machine checks the collector
against what the kernel prints now.
"""

from __future__ import annotations

import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pcpd import cli
from pcpd.kernel_exporter import KernelCollector, parse_buddyinfo, parse_vmstat, read_kernel_state
from pcpd.zoneinfo import read_zoneinfo

ZONEINFO = Path(__file__).parent / "data" / "zoneinfo" / "this-machine-6.18.txt"
BUDDYINFO = """\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3
Node 0, zone    DMA32      2      4      2      2      1      2      0      3      3      1    753
Node 0, zone   Normal    231    363   2285   1718    551    277    171     90     47     30     40
"""
VMSTAT = """\
nr_free_pages 909027
pgalloc_dma 0
pgalloc_dma32 12
pgalloc_normal 4408502
pgalloc_movable 0
allocstall_normal 7
pgfree 5337804
thp_fault_alloc 3
"""


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    shutil.copy(ZONEINFO, tmp_path / "zoneinfo")
    (tmp_path / "buddyinfo").write_text(BUDDYINFO)
    (tmp_path / "vmstat").write_text(VMSTAT)
    return tmp_path


def registry_for(proc: Path) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(KernelCollector(proc))
    return registry


def test_pagesets_of_every_cpu_and_zone(proc):
    r = registry_for(proc)
    normal0 = {"node": "0", "zone": "Normal", "cpu": "0"}
    assert r.get_sample_value("pcpd_kernel_pcp_pages", normal0) == 1201
    assert r.get_sample_value("pcpd_kernel_pcp_high_pages", normal0) == 3611
    assert r.get_sample_value("pcpd_kernel_pcp_batch_pages", normal0) == 63
    assert r.get_sample_value("pcpd_kernel_pcp_high_min_pages", normal0) == 3548
    assert r.get_sample_value("pcpd_kernel_pcp_high_max_pages", normal0) == 24576
    assert r.get_sample_value("pcpd_kernel_pcp_pages", {**normal0, "cpu": "1"}) == 3271
    # the model's CPU-1 DMA32 pageset, read from the same file by the zoneinfo parser
    zones = {(z.node, z.zone): z for z in read_zoneinfo(str(ZONEINFO))}
    for (node, zone), info in zones.items():
        for pageset in info.pagesets:
            labels = {"node": str(node), "zone": zone, "cpu": str(pageset.cpu)}
            assert r.get_sample_value("pcpd_kernel_pcp_high_pages", labels) == pageset.high


def test_zone_and_buddy_state(proc):
    r = registry_for(proc)
    normal = {"node": "0", "zone": "Normal"}
    info = next(z for z in read_zoneinfo(str(ZONEINFO)) if z.zone == "Normal")
    assert r.get_sample_value("pcpd_kernel_zone_free_pages", normal) == info.pages_free
    assert r.get_sample_value("pcpd_kernel_zone_managed_pages", normal) == info.managed
    assert r.get_sample_value("pcpd_kernel_zone_watermark_pages", {**normal, "watermark": "low"}) \
        == info.watermarks.low
    assert r.get_sample_value("pcpd_kernel_buddyinfo_blocks", {**normal, "order": "2"}) == 2285
    assert r.get_sample_value("pcpd_kernel_buddyinfo_blocks", {**normal, "order": "10"}) == 40
    assert r.get_sample_value("pcpd_kernel_buddyinfo_blocks", {**normal, "order": "11"}) is None


def test_vmstat_counters(proc):
    r = registry_for(proc)
    assert r.get_sample_value("pcpd_kernel_pgalloc_total", {"zone": "normal"}) == 4408502
    assert r.get_sample_value("pcpd_kernel_pgalloc_total", {"zone": "dma32"}) == 12
    assert r.get_sample_value("pcpd_kernel_allocstall_total", {"zone": "normal"}) == 7
    assert r.get_sample_value("pcpd_kernel_pgfree_total") == 5337804
    assert r.get_sample_value("pcpd_kernel_free_pages") == 909027
    assert r.get_sample_value("pcpd_kernel_scrape_errors_total") == 0


def scrape(proc: Path) -> dict[tuple[str, tuple], float]:
    """One collect(): {(sample name, sorted labels): value}."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in KernelCollector(proc).collect() for s in family.samples}


def test_a_missing_or_garbled_file_costs_its_series_not_the_scrape(proc):
    (proc / "vmstat").unlink()
    (proc / "zoneinfo").write_bytes(b"Node 0, zone Normal\n  pages free \x00\x01\n")
    samples = scrape(proc)
    names = {name for name, _ in samples}
    assert "pcpd_kernel_pgfree_total" not in names
    assert "pcpd_kernel_pcp_pages" not in names
    assert samples["pcpd_kernel_buddyinfo_blocks", (("node", "0"), ("order", "0"), ("zone", "Normal"))] == 231
    assert samples["pcpd_kernel_scrape_errors_total", ()] == 2


def test_errors_accumulate_across_scrapes(proc):
    (proc / "buddyinfo").unlink()
    collector = KernelCollector(proc)
    counts = []
    for _ in range(3):
        family = next(f for f in collector.collect() if f.name == "pcpd_kernel_scrape_errors")
        counts.append(family.samples[0].value)
    assert counts == [1, 2, 3]


def test_parsers_ignore_other_lines():
    assert parse_buddyinfo("garbage\nNode 1, zone Normal 1 2 3\n") == {(1, "Normal"): (1, 2, 3)}
    assert parse_vmstat("a 1\nb x\nc -2\n\nd 3 4\n") == {"a": 1, "c": -2}


def test_this_kernels_proc():
    state = read_kernel_state()
    if not Path("/proc/zoneinfo").exists():
        pytest.skip("no /proc/zoneinfo on this machine")
    assert state.errors == 0
    live = read_zoneinfo("/proc/zoneinfo")
    assert {(z.node, z.zone) for z in state.zones} == {(z.node, z.zone) for z in live}
    assert sum(len(z.pagesets) for z in state.zones) == sum(len(z.pagesets) for z in live)
    assert "pgfree" in state.vmstat


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (.ci/run installs prometheus)")
def test_promtool_accepts_the_exposition(proc):
    text = generate_latest(registry_for(proc))
    done = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


def test_the_command_serves_metrics_until_its_duration(monkeypatch, capsys):
    import pcpd.kernel_exporter as kernel_exporter
    served = {}
    original = kernel_exporter.MetricsServer.__enter__

    def enter_and_scrape(self):
        server = original(self)
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=10) as response:
            served["body"] = response.read().decode()
        return server

    monkeypatch.setattr(kernel_exporter.MetricsServer, "__enter__", enter_and_scrape)
    assert cli.main(["kernel-exporter", "--address", "127.0.0.1:0", "--duration", "0.1"]) == 0
    assert "pcpd_kernel_scrape_errors_total" in served["body"]
    assert "serving this kernel's PCP state" in capsys.readouterr().out


def test_a_bad_address_is_a_one_line_usage_error(capsys):
    assert cli.main(["kernel-exporter", "--address", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "host:port" in err
