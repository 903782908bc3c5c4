"""Trace lines for the replay tests: perf and ftrace text of the kmem events, and pass 1 over them.

The replay-* fixtures in tests/data/traces/ are real captures on the
project's machine (x86-64, 2 CPUs, kernel 6.18.44, perf 6.1, as root), of
a workload that allocates and frees inside the capture window:

    # work.py: touch a 1 MiB MAP_PRIVATE anonymous mapping and munmap it
    # (twice, or three times); touch a MADV_HUGEPAGE one (order-9 THPs);
    # write and read 16 KiB through a pipe, 16 or 64 times.
    EVENTS="-e kmem:mm_page_alloc -e kmem:mm_page_free -e kmem:mm_page_free_batched
            -e kmem:mm_page_pcpu_drain -e kmem:mm_page_alloc_zone_locked
            -e kmem:mm_page_alloc_extfrag"
    perf record $EVENTS -a -o y.data -- python3 work.py     # default PCP sizing
    perf script -i y.data | sed -n 2501,5500p | gzip -9n > replay-perf-6.18.txt.gz
    # a small PCP (high 266, no auto-tuning), so that 3500 lines hold refills
    # and drains; zoneinfo taken in the same second
    sysctl -w vm.percpu_pagelist_high_fraction=800
    cat /proc/zoneinfo > replay-zoneinfo-6.18-small-pcp.txt
    perf record $EVENTS -a -o z.data -- python3 work.py
    sysctl -w vm.percpu_pagelist_high_fraction=0
    perf script -i z.data | sed -n 12001,15500p | xz -9e > replay-perf-6.18-small-pcp.txt.xz
"""

from pathlib import Path

from pcpd.replay.decode import decode
from pcpd.replay.spool import OpSpool
from pcpd.replay.trace import parse_lines

DATA = Path(__file__).parent / "data" / "traces"
SMALL_PCP = DATA / "replay-perf-6.18-small-pcp.txt.xz"
SMALL_PCP_ZONEINFO = DATA / "replay-zoneinfo-6.18-small-pcp.txt"
DEFAULT_PCP = DATA / "replay-perf-6.18.txt.gz"
THIS_MACHINE = Path(__file__).parent / "data" / "zoneinfo" / "this-machine-6.18.txt"

FT = "            bash-2113  [{cpu:03d}] .....  {ts:.6f}: "
PERF = "            bash  2113 [{cpu:03d}]  {ts:.6f}: kmem:"
ANON = "GFP_HIGHUSER_MOVABLE|__GFP_ZERO|__GFP_COMP"


def alloc(pfn, order=0, gfp=ANON, cpu=0, ts=1.0, prefix=PERF, mt=1):
    page = "(nil)" if pfn == 0 else f"0x{pfn:x}"
    return (prefix.format(cpu=cpu, ts=ts) + f"mm_page_alloc: page={page} pfn=0x{pfn:x} "
            f"order={order} migratetype={mt} gfp_flags={gfp}")


def work(function, start=True, cpu=0, ts=1.0):
    event = "workqueue_execute_start" if start else "workqueue_execute_end"
    return (f" kworker/{cpu}:1-mm_  15022 [{cpu:03d}]  {ts:.6f}: workqueue:{event}: "
            f"work struct 0xffff888627c2b5e0: function {function}")


def free(pfn, order=0, cpu=0, ts=1.0, event="mm_page_free", prefix=PERF):
    return prefix.format(cpu=cpu, ts=ts) + f"{event}: page=0x{pfn:x} pfn=0x{pfn:x} order={order}"


def batched(pfn, cpu=0, ts=1.0):
    return free(pfn, 0, cpu, ts, "mm_page_free_batched")


def decode_lines(lines, decay_interval=0.0):
    """Pass 1 over ``lines``: what it decoded and every spooled operation."""
    with OpSpool() as spool:
        decoded = decode(parse_lines(lines, "test"), spool, decay_interval)
        return decoded, list(spool)


# --- a THP workload, by hand --------------------------------------------------------------

THP_ZONEINFO = DATA / "replay-zoneinfo-6.18-thp.txt"     # the bundle's zoneinfo, pagesets edited
BUNDLE_THP = Path(__file__).parent / "data" / "bundles" / "thp-6.18-a"
BUNDLE_NET = BUNDLE_THP.parent / "net-6.18-a"
BUNDLE_PAGECACHE = BUNDLE_THP.parent / "pagecache-6.18-a"
THP_GFP = "GFP_TRANSHUGE|__GFP_NORETRY|__GFP_THISNODE"


def locked(pfn, order=0, mt=1, cpu=0, ts=1.0, refill=1):
    return (PERF.format(cpu=cpu, ts=ts) + f"mm_page_alloc_zone_locked: page=0x{pfn:x} "
            f"pfn=0x{pfn:x} order={order} migratetype={mt} percpu_refill={refill}")


def thp_like(rounds=8, n=32, cpu=0, first_pfn=0x200000):
    """What a 6.18 kernel with an auto-tuned PCP records for ``rounds`` of: map and touch n
    THPs on one CPU, unmap them (per process, so only this task's events).

    Round 1 refills the THP list two blocks at a time (nr_pcp_alloc(): batch 63 >> 9,
    at least 2): n blocks from the buddy in all.  The frees put the n THPs on the PCP,
    and with ``high`` above n * 512 nothing drains; later rounds allocate them back.
    """
    ts, out = 100.0, []
    pfns = [first_pfn + 512 * i for i in range(n)]
    for r in range(rounds):
        for i, pfn in enumerate(pfns):
            ts += 0.0005
            if r == 0 and i % 2 == 0:            # the list is empty: rmqueue_bulk() takes 2
                out += [locked(pfns[i + 1], 9, ts=ts, cpu=cpu), locked(pfn, 9, ts=ts, cpu=cpu)]
            out.append(alloc(pfn, 9, THP_GFP, cpu=cpu, ts=ts))
        for pfn in pfns:
            ts += 0.0005
            out.append(free(pfn, 9, cpu=cpu, ts=ts))
    return out
