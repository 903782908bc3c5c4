"""pcpd.pagetypeinfo: /proc/pagetypeinfo captures."""

import pytest
from replay_lines import BUNDLE_THP

from pcpd.errors import InputError
from pcpd.pagetypeinfo import OVERFLOW, parse_pagetypeinfo_lines, read_pagetypeinfo

SAMPLE = """\
Page block order: 9
Pages per block:  512

Free pages count per migrate type at order       0      1      2      3      4      5      6      7      8      9     10
Node    0, zone      DMA, type    Unmovable      0      0      0      0      0      0      0      0      1      0      0
Node    0, zone      DMA, type      Movable      0      0      0      0      0      0      0      0      0      1      3
Node    0, zone   Normal, type    Unmovable     29    142     70     41    104     51     33     10      2      0      0
Node    0, zone   Normal, type      Movable >100000  4339   2575    853    383   3135   2889   2167   1215    645   3621
Node    0, zone   Normal, type  Reclaimable      1      1      8      4      1      1      1      0      0      1      0
Node    0, zone   Normal, type          CMA      0      0      0      0      0      0      0      0      0      0      2

Number of blocks type     Unmovable      Movable  Reclaimable   HighAtomic          CMA      Isolate
Node 0, zone      DMA            1            7            0            0            0            0
Node 0, zone   Normal           61        10660           31            0            4            0

Number of mixed blocks    Unmovable      Movable  Reclaimable   HighAtomic          CMA      Isolate
Node 0, zone   Normal            3            9            1            0            0            0
"""


def test_rows_and_the_overflow_cap():
    info = parse_pagetypeinfo_lines(SAMPLE.split("\n"), "t")
    assert info.pageblock_order == 9 and set(info.zones) == {(0, "DMA"), (0, "Normal")}
    normal = info.zone(0, "Normal")
    assert normal is not None and normal.capped
    assert normal.free["Movable"][0] == OVERFLOW and normal.free["Unmovable"][1] == 142
    assert normal.blocks == {"Unmovable": 61, "Movable": 10660, "Reclaimable": 31,
                             "HighAtomic": 0, "CMA": 4, "Isolate": 0}   # not the mixed ones
    assert normal.free_pages("Reclaimable") == 1 + 2 + 32 + 32 + 16 + 32 + 64 + 512
    assert not info.zone(0, "DMA").capped


def test_a_real_capture():
    info = read_pagetypeinfo(str(BUNDLE_THP / "pagetypeinfo-before.txt"))
    normal = info.zone(0, "Normal")
    assert normal is not None and sum(normal.blocks.values()) == 10752


@pytest.mark.parametrize("text, message", [
    ("", "no zone rows"),
    ("Node 0, zone Normal, type Movable 1 2\n", "unexpected"),
    ("Free pages count per migrate type at order 0 1\nNode 0, zone N, type Movable 1\n",
     "1 counts under 2 orders"),
    ("Number of blocks type Unmovable Movable\nNode 0, zone N 1 2 3\n", "3 counts under 2 types"),
    ("Free pages count per migrate type at order 0\nNode 0, zone N, type M 1\n"
     "Node 0, zone N, type M 2\n", "second M row"),
    ("Page block order: 9\n\x00\x01\n", "binary data"),
    pytest.param("Page block order: 9\n" + "9" * 70_000 + "\n", "a line too long", id="too-long"),
    ("Number of mixed blocks Unmovable Movable\nNode 0, zone N 1\n", "1 counts under 2 types"),
    ("Free pages count per migrate type at order 0\nNode 0, zone N 1 2\n", "unexpected"),
    ("Page block order: 9\nPages per block: 512\n\n", "^t:4: no zone rows"),
])
def test_bad_input_is_one_line(text, message):
    pattern = message if message.startswith("^") else f"^t:[0-9]+: .*{message}"
    with pytest.raises(InputError, match=pattern) as exc:
        parse_pagetypeinfo_lines(text.split("\n"), "t")
    assert "\n" not in str(exc.value)


def test_mixed_blocks_are_not_pageblocks_and_pages_per_block_is_not_the_order():
    info = parse_pagetypeinfo_lines(["Pages per block: 512", "Number of mixed blocks Unmovable Movable",
                                     "Node 0, zone N 3 4", "Number of blocks type Unmovable Movable",
                                     "Node 0, zone N 1 2"], "t")
    assert info.pageblock_order is None
    assert info.zone(0, "N").blocks == {"Unmovable": 1, "Movable": 2} and info.zone(0, "N").free == {}
