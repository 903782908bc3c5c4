"""pcpd.replay.zone: the zone a replay models, with or without a zoneinfo capture."""

import pytest
from replay_lines import SMALL_PCP_ZONEINFO, THIS_MACHINE

from pcpd.errors import InputError
from pcpd.model.sizing import PcpLimits
from pcpd.replay.decode import Decoded
from pcpd.replay.run import model_spec
from pcpd.replay.zone import ZoneSetup, default_zone, zoneinfo_zone
from pcpd.zoneinfo import compare_zones, read_zoneinfo


def test_default_zone_is_one_gib_or_four_times_the_peak():
    d = Decoded(peak_live_pages=1000, nr_cpu_ids=4)
    assert default_zone(d, "6.7") == ZoneSetup(1 << 18, "6.7", 4, "default", 1 << 18)
    d.peak_live_pages = 100_000
    assert default_zone(d, "5.14").pages == 400_384          # rounded up to 1024 pages


def test_zoneinfo_zone_uses_the_captured_pcp():
    zone = zoneinfo_zone(str(SMALL_PCP_ZONEINFO), Decoded(), None)
    assert zone == ZoneSetup(
        pages=425984, era="6.7", nsplit=2, source=str(SMALL_PCP_ZONEINFO), managed=425984,
        limits=PcpLimits(63, 266, 266, 266), watermarks=zone.watermarks, node=0, captured=True,
        pagesets=zone.pagesets, free_pages=196058, high_is_state=True)
    assert zone.pagesets is not None and sorted(zone.pagesets) == [0, 1]
    assert (zone.pagesets[0].count, zone.pagesets[1].high) == (4413, 8542)
    assert zone.watermarks is not None
    assert (zone.watermarks.min, zone.watermarks.low, zone.watermarks.high) == (5984, 7480, 8976)
    spec = model_spec("legacy", zone, 2, 16)
    assert spec.record_bytes == 64 and spec.limits() == PcpLimits(63, 266, 266, 266)
    assert model_spec("memdesc", zone, 2, 16).record_bytes == 16


def test_zoneinfo_zone_for_another_era_uses_that_eras_model():
    zone = zoneinfo_zone(str(THIS_MACHINE), Decoded(), "5.14")
    normal = next(c for c in compare_zones(read_zoneinfo(str(THIS_MACHINE)))
                  if c.zone.zone == "Normal")
    assert not zone.captured and zone.limits == dict(normal.models)["5.14"]
    assert model_spec("legacy", zone, 2, 16).limits() == zone.limits


def test_zoneinfo_without_normal_zone(tmp_path):
    text = THIS_MACHINE.read_text()
    dma_only = text[:text.index("Node 0, zone    DMA32")]
    (tmp_path / "zi").write_text(dma_only)
    with pytest.raises(InputError, match="no populated Normal zone"):
        zoneinfo_zone(str(tmp_path / "zi"), Decoded(), None)
