"""pcpd.zoneinfo: parsing real and hand-made /proc/zoneinfo captures and
checking them against the sizing model.

Fixtures in tests/data/zoneinfo/:
- this-machine-6.18.txt: /proc/zoneinfo of the project's 2-CPU kernel 6.18 machine.
- node-exporter.txt: prometheus/node_exporter collector/fixtures/proc/zoneinfo
  (commit 87579e0947542b3e8522ca2f77d2f221a2226797), a ~5.x 8-CPU capture.
- era-4.18.txt, era-5.14.txt, era-6.7-two-nodes.txt: hand-made from the
  layouts in section 7.2 of the kernel reference, with values computed by
  the kernel formulas (4.x layout with `scanned`; 6.x header with the pre-6.7
  pageset block; 6.7+ layout on two nodes of two CPUs each).
"""

import json
import os
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pcpd.errors import InputError
from pcpd.inputs import MAX_LINE
from pcpd.model.sizing import zone_watermarks
from pcpd.zoneinfo import (
    ZoneWatermarks,
    command,
    compare_zones,
    parse_zoneinfo,
    read_zoneinfo,
)

DATA = Path(__file__).parent / "data" / "zoneinfo"
THIS_MACHINE = DATA / "this-machine-6.18.txt"
NODE_EXPORTER = DATA / "node-exporter.txt"
REPO = Path(__file__).parent.parent


def compare(path):
    return {(c.zone.node, c.zone.zone): c for c in compare_zones(read_zoneinfo(str(path)))}


def parse_text(text):
    return compare_zones(parse_zoneinfo(text, "capture"))


@pytest.mark.parametrize("name, zones, populated, cpus", [
    ("this-machine-6.18.txt", 5, 3, 2),
    ("node-exporter.txt", 5, 3, 8),
    ("era-4.18.txt", 4, 3, 4),
    ("era-5.14.txt", 5, 3, 4),
    ("era-6.7-two-nodes.txt", 10, 4, 4),
])
def test_every_fixture_parses(name, zones, populated, cpus):
    parsed = read_zoneinfo(str(DATA / name))
    assert len(parsed) == zones
    assert sum(z.populated for z in parsed) == populated
    assert {z.cpus for z in parsed if z.populated} == {cpus}
    assert all(z.cpus == 0 for z in parsed if not z.populated)


def test_this_machine_matches_6_7():
    # The reference quotes managed 458752 / low 7840 (high_min 3920, high_max
    # 28672) for this machine; the capture taken here shows a smaller Normal zone.
    normal = compare(THIS_MACHINE)[(0, "Normal")]
    z = normal.zone
    assert (z.managed, z.watermarks.low, z.cpus, normal.nsplit) == (393216, 7097, 2, 2)
    assert (z.batch, z.high_min, z.high_max) == (63, 3548, 24576)
    assert (normal.model.batch, normal.model.high_min, normal.model.high_max) == (63, 3548, 24576)
    assert normal.era == "6.7" and normal.eras == ("6.7",) and normal.match
    # high is live auto-tuning state: each CPU sits somewhere in [high_min, high_max].
    assert all(3548 <= p.high <= 24576 for p in z.pagesets)


def test_this_machine_every_zone_matches_6_7():
    for c in compare(THIS_MACHINE).values():
        assert (c.era, c.match) == ("6.7", True), c.mismatches


def test_this_machine_watermarks_need_the_thp_floor():
    # Section 1.6: the khugepaged floor over 3 populated zones, not the sqrt
    # formula, reproduces every watermark of the capture.
    zones = [z for z in read_zoneinfo(str(THIS_MACHINE)) if z.populated]
    lowmem = sum(z.managed for z in zones)
    for z in zones:
        model = zone_watermarks(z.managed, lowmem, thp=True, nr_zones=len(zones))
        assert ZoneWatermarks(model.min, model.low, model.high, model.promo, 0) == z.watermarks
    assert zone_watermarks(zones[-1].managed, lowmem).low != zones[-1].watermarks.low


def test_node_exporter_matches_pre_5_14():
    zones = compare(NODE_EXPORTER)
    for key in ((0, "DMA32"), (0, "Normal")):
        c = zones[key]
        assert (c.zone.batch, c.zone.high) == (63, 378) == (c.model.batch, c.model.high)
        assert c.zone.high == 6 * c.zone.batch
        assert c.eras == ("5.13",) and c.era == "5.13" and c.match
    dma = zones[(0, "DMA")]
    assert (dma.zone.batch, dma.zone.high) == (1, 0)
    # Both old eras give high 0 for a DMA zone; the file as a whole is 5.13.
    assert dma.eras == ("4.18", "5.13") and dma.era == "5.13"


@pytest.mark.parametrize("name, era, nsplit", [
    ("era-4.18.txt", "4.18", 4),
    ("era-5.14.txt", "5.14", 4),
    ("era-6.7-two-nodes.txt", "6.7", 2),
])
def test_hand_made_fixtures_match_their_era(name, era, nsplit):
    for c in compare(DATA / name).values():
        assert (c.era, c.match, c.nsplit) == (era, True, nsplit), c.mismatches


def test_untouched_cpus_show_high_0_in_6_7():
    c = compare(DATA / "era-6.7-two-nodes.txt")[(1, "Normal")]
    assert [p.high for p in c.zone.pagesets][:2] == [0, 0]
    assert c.zone.high is None  # CPUs disagree
    assert c.match


def test_wrong_high_min_is_flagged():
    text = THIS_MACHINE.read_text().replace("high_min: 3548", "high_min: 3920")
    normal = [c for c in parse_text(text) if c.zone.zone == "Normal"][0]
    assert not normal.match and normal.era == "6.7" and normal.eras == ()
    assert normal.mismatches == ("high_min 3920 on all 2 CPUs, model 3548",)


def test_manual_fraction_is_named_in_the_mismatch():
    text = THIS_MACHINE.read_text().replace("high_max: 24576", "high_max: 3548")
    normal = [c for c in parse_text(text) if c.zone.zone == "Normal"][0]
    assert not normal.match
    assert any("percpu_pagelist_high_fraction" in m for m in normal.mismatches)


def test_6_7_high_outside_the_bounds_is_flagged():
    lines = THIS_MACHINE.read_text().split("\n")
    cpu1_high = [i for i, line in enumerate(lines) if line.strip().startswith("high:")][-1]
    lines[cpu1_high] = "              high:     30000"
    normal = [c for c in parse_text("\n".join(lines)) if c.zone.zone == "Normal"][0]
    assert normal.mismatches == ("high 30000 on CPU 1 outside the model's [3548, 24576]",)


def test_pre_6_7_mismatch_reports_the_closest_era():
    text = NODE_EXPORTER.read_text().replace("high:  378", "high:  400")
    normal = [c for c in parse_text(text) if c.zone.zone == "Normal"][0]
    assert normal.era == "5.13" and not normal.match
    assert normal.mismatches == ("high 400 on all 8 CPUs, model 378",)


def test_memory_only_second_node_breaks_the_even_split():
    # Only the 6.7 two-node fixture's nsplit assumption changes the model.
    one_node = (DATA / "era-6.7-two-nodes.txt").read_text().replace("Node 1,", "Node 0,")
    zones = parse_text(one_node)
    assert {c.nsplit for c in zones} == {4}
    assert not all(c.match for c in zones)


# Bad input.

def _fixture_lines(path=NODE_EXPORTER):
    return path.read_text().split("\n")


@pytest.mark.parametrize("text, line, fragment", [
    ("", 1, "empty"),
    ("\n\n", 1, "empty"),
    ("hello world\n", 1, "expected 'Node N, zone NAME'"),
    ("Node 0, zone DMA\n  pages free 1\n  gibberish here\n", 3, "unexpected 'gibberish here'"),
    ("Node 0, zone DMA\n  pages free 1\n", 3, "no 'min', 'low'"),
    ("Node 0, zone DMA\n  pages\x00 free 1\n", 2, "binary"),
    ("Node 0, zone DMA\n  pages free \ufffd\n", 2, "binary"),
    ("Node 0, zone DMA\n        managed  1\n        managed  2\n", 3, "second 'managed'"),
    ("Node 0, zone DMA\n              count: 0\n", 2, "unexpected 'count: 0'"),
    ("Node 0, zone DMA\n  pages free " + "9" * 5000 + "\n", 2, "unexpected 'pages free 999"),
])
def test_bad_input_names_the_line(text, line, fragment):
    with pytest.raises(InputError) as err:
        parse_zoneinfo(text, "cap.txt")
    assert str(err.value).startswith(f"cap.txt:{line}: ")
    assert fragment in str(err.value)


def test_crlf_line_ends_parse_the_same():
    crlf = NODE_EXPORTER.read_text().replace("\n", "\r\n")
    assert parse_zoneinfo(crlf, "x") == read_zoneinfo(str(NODE_EXPORTER))


def test_truncated_pageset_is_reported_at_its_cpu_line():
    lines = _fixture_lines()
    cut = lines.index("              count: 357") + 1   # DMA32, cpu 0: count only
    with pytest.raises(InputError, match=rf"^x:{cut - 1}: cpu 0 pageset .* lacks high, batch"):
        parse_zoneinfo("\n".join(lines[:cut]), "x")


def test_truncated_before_start_pfn_is_reported():
    lines = _fixture_lines()
    cut = lines.index("  start_pfn:           1048576")
    with pytest.raises(InputError, match="no 'start_pfn:' line"):
        parse_zoneinfo("\n".join(lines[:cut]), "x")


def test_populated_zone_without_pagesets_is_reported():
    lines = _fixture_lines()
    cut = lines.index("  pagesets")
    with pytest.raises(InputError, match="present 3997 but no pagesets"):
        parse_zoneinfo("\n".join(lines[:cut]), "x")


def test_duplicate_cpu_is_reported():
    text = THIS_MACHINE.read_text().replace("cpu: 1", "cpu: 0")
    with pytest.raises(InputError, match="lists a CPU twice"):
        parse_zoneinfo(text, "x")


@pytest.mark.parametrize("cut", range(1, len(_fixture_lines())))
def test_every_truncation_parses_or_raises_input_error(cut):
    lines = _fixture_lines()
    try:
        zones = parse_zoneinfo("\n".join(lines[:cut]), "x")
    except InputError as err:
        assert str(err).startswith("x:")
    else:
        # Only a cut at a zone boundary (or inside an unpopulated zone's
        # counters) leaves a well-formed file.
        assert [z.zone for z in zones] == ["DMA", "DMA32", "Normal", "Movable", "Device"][:len(zones)]


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_arbitrary_text_never_escapes_as_another_exception(text):
    try:
        parse_zoneinfo("Node 0, zone DMA\n" + text, "x")
    except InputError:
        pass


def test_binary_file_reports_its_line(tmp_path):
    path = tmp_path / "zoneinfo"
    path.write_bytes(NODE_EXPORTER.read_bytes()[:200] + b"\xff\xfe\x00garbage\n")
    with pytest.raises(InputError, match=rf"^{path}:\d+: binary data"):
        read_zoneinfo(str(path))


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(InputError, match="cannot read: No such file"):
        read_zoneinfo(str(tmp_path / "absent"))
    with pytest.raises(InputError, match="cannot read"):
        read_zoneinfo(str(tmp_path))


# Command.

def test_command_text_report(capsys):
    assert command(Namespace(file=str(THIS_MACHINE), json=False)) == 0
    out = capsys.readouterr().out
    assert "Node 0, zone Normal: managed 393216; min 5678, low 7097" in out
    assert "model 6.7" in out and "<- match" in out
    assert "unpopulated: Node 0 Movable, Node 0 Device" in out


def test_command_text_report_flags_mismatches(tmp_path, capsys):
    path = tmp_path / "zoneinfo"
    path.write_text(NODE_EXPORTER.read_text().replace("batch: 63", "batch: 31"))
    assert command(Namespace(file=str(path), json=False)) == 0
    out = capsys.readouterr().out
    assert "no era reproduces the capture" in out
    assert "  ! batch 31 on all 8 CPUs, model 63" in out


def test_command_json(capsys):
    assert command(Namespace(file=str(NODE_EXPORTER), json=True)) == 0
    zones = json.loads(capsys.readouterr().out)
    assert [z["zone"] for z in zones] == ["DMA", "DMA32", "Normal"]
    normal = zones[2]
    assert normal["captured"] == {"batch": 63, "high": 378}
    assert normal["model"] == {"batch": 63, "high": 378}
    assert (normal["era"], normal["match"], normal["cpus"]) == ("5.13", True, 8)
    assert len(normal["pagesets"]) == 8


def test_command_json_6_7_has_bounds(capsys):
    assert command(Namespace(file=str(THIS_MACHINE), json=True)) == 0
    normal = json.loads(capsys.readouterr().out)[-1]
    assert normal["model"] == {"batch": 63, "high": 3548, "high_min": 3548, "high_max": 24576}
    assert {"batch", "high", "high_min", "high_max"} <= normal["captured"].keys()


def _pcpd(*args):
    return subprocess.run([sys.executable, "-m", "pcpd", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_cli_json():
    result = _pcpd("zoneinfo", str(THIS_MACHINE), "--json")
    assert result.returncode == 0, result.stderr
    zones = json.loads(result.stdout)
    for zone in zones:
        assert {"node", "zone", "managed", "cpus", "captured", "model", "era", "match"} <= zone.keys()
        assert {"batch", "high"} <= zone["captured"].keys()
        assert {"batch", "high", "high_min", "high_max"} <= zone["model"].keys()
    assert all(zone["match"] for zone in zones)


def test_cli_missing_file():
    result = _pcpd("zoneinfo", "/nonexistent/zoneinfo")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "/nonexistent/zoneinfo: cannot read" in result.stderr


# Hostile input: zoneinfo files are read a line at a time, within caps (pcpd.inputs).

@pytest.mark.parametrize("name", sorted(p.name for p in DATA.iterdir()))
@pytest.mark.parametrize("cut", [None, -1, -200])
def test_reading_a_file_parses_as_its_text_does(tmp_path, name, cut):
    text = (DATA / name).read_text()
    if cut is not None:
        text = text[:cut]             # no final newline; cut inside a zone
    (tmp_path / "z").write_text(text)
    try:
        expected = parse_zoneinfo(text, str(tmp_path / "z"))
    except InputError as err:
        with pytest.raises(InputError) as got:
            read_zoneinfo(str(tmp_path / "z"))
        assert str(got.value) == str(err)
    else:
        assert read_zoneinfo(str(tmp_path / "z")) == expected


def test_an_over_long_line_is_refused_before_it_is_read_whole(tmp_path):
    (tmp_path / "z").write_bytes(b"Node 0, zone DMA\n  pages free " + b"9" * (8 << 20) + b"\n")
    with pytest.raises(InputError, match=rf"^{tmp_path / 'z'}:2: a line of more than {MAX_LINE} "
                                         "characters, not a /proc/zoneinfo text$"):
        read_zoneinfo(str(tmp_path / "z"))


def test_a_file_past_the_cap_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("pcpd.zoneinfo.MAX_FILE_BYTES", 1000)
    (tmp_path / "z").write_text(THIS_MACHINE.read_text())
    with pytest.raises(InputError, match=r"z: larger than 1000 bytes, more than pcpd reads"):
        read_zoneinfo(str(tmp_path / "z"))


def test_only_regular_files_and_stdin_are_read(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(InputError, match=r"fifo: cannot read: a FIFO, not a regular file"):
        read_zoneinfo(str(tmp_path / "fifo"))
    with pytest.raises(InputError, match=r"^/dev/zero: cannot read: a character device"):
        read_zoneinfo("/dev/zero")
    with open(THIS_MACHINE) as stdin:
        result = subprocess.run([sys.executable, "-m", "pcpd", "zoneinfo", "-"], cwd=REPO, stdin=stdin,
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == _pcpd("zoneinfo", str(THIS_MACHINE)).stdout.replace(str(THIS_MACHINE),
                                                                                 "<stdin>")
