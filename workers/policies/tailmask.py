"""``legacy-tailmask``: today's kernel with the tail-page encoding of Kiryl Shutsemau's 2026 series.

Source: Kiryl Shutsemau, "mm: rework compound_head() for power-of-2
sizeof(struct page)" (linux-mm, PATCHv2 December 2025 to v6 February 2026;
in mm as commit 8c846c879e22, April 2026).  A tail page's ``compound_info``
(the old ``compound_head``: bit 0 says "tail", the rest pointed to the head)
becomes, when sizeof(struct page) is a power of two, a *mask* that the tail's
own struct page address is ANDed with to find its head: the head's struct
page is naturally aligned to its order.  So every tail page of every
compound page of one order holds the same word, whatever its head.  Upstream
uses the mask only with the HugeTLB vmemmap optimisation (HVO), whose shared
tail vmemmap pages it lets drop their "fake heads"; this policy applies it
to every compound page, which the series says the encoding supports.

What changes here against ``legacy``: ``prep_compound_page()`` fills every
tail's compound_info with the per-order constant ``TAIL_INFO[order]``
instead of a pointer to this head, so the tail stores are one identical fill
(a pattern fill, the same bytes in every 64-byte line); everything else is
legacy's.  What does not change, and what this policy is here to show: a
PCP round trip of an order-9 folio still writes all 511 tail lines on
allocation and writes and reads them again on free (free_tail_page_prepare()
still clears the tails, PAGE_FLAGS_CHECK_AT_PREP still runs over them), so
its cacheline counts are legacy's exactly, against the compound proposal's
none.  Identical tails save memory only where the tail struct pages are not
separately backed (HVO); for memory that cycles through the PCP as real
pages, the writes remain.

Modelling choices: the mask is computed for pcpd's 64-byte record and
stored as the kernel stores it (``~((64 << order) - 1) | 1``, a negative
int64 here); pcpd does not model HVO, so no tail write is elided.  Keeping
the identical tails prepared while a block sits on the PCP is not this
encoding's doing (a tail's head is fixed by alignment under either
encoding) and is what ``compound`` and ``compound-lazy`` model.
"""

from __future__ import annotations

from pcpd.kernel import PAGE_ORDERS, STRUCT_PAGE_BYTES
from pcpd.model import pagewords
from pcpd.model.lines import lines_spanned
from workers.policies.base import PREP_W
from workers.policies.struct_page import LegacyPolicy

__all__ = ["TailMaskPolicy", "TAIL_INFO", "compound_head"]

# compound_info of every tail page of an order-N compound page: the mask that
# clears the low bits of a tail's struct page address down to its head's, with
# bit 0 (the tail bit) set.  Order 0 has no tails; its entry is never stored.
TAIL_INFO: tuple[int, ...] = tuple(-(STRUCT_PAGE_BYTES << order) | 1 for order in PAGE_ORDERS)


def compound_head(info: int, pfn: int) -> int:
    """compound_head() under the mask encoding: the head pfn of the tail ``pfn`` whose
    compound_info is ``info`` (``pfn`` itself when bit 0 says it is no tail)."""
    if not info & 1:
        return pfn
    return ((pfn * STRUCT_PAGE_BYTES) & (info & ~1)) // STRUCT_PAGE_BYTES


class TailMaskPolicy(LegacyPolicy):
    """Legacy, with each tail's compound_info the per-order mask."""

    name = "legacy-tailmask"

    def _prep_compound_page(self, pfn, order, lines=None) -> None:
        """prep_compound_page() with the mask encoding: three stores into each of the
        2**order - 1 tails, every tail of the order getting the same compound_info."""
        n = 1 << order
        mem = self.np_mem
        first, end = (pfn + 1) * 8, (pfn + n) * 8
        mem[first + pagewords.W_MAPPING:end:8] = pagewords.TAIL_MAPPING
        mem[first + pagewords.W_LINK:end:8] = TAIL_INFO[order]      # set_compound_head(): the mask
        mem[first + pagewords.W_PRIVATE64:end:8] = 0
        # prep_compound_head(): order, nr_pages, mapcounts in page[1]; _deferred_list in page[2]
        mem[first + pagewords.W_PRIVATE64] = order
        # the lines written are legacy's: a 64-byte tail is its own line whatever it holds
        if lines is None:
            self.v[PREP_W] += lines_spanned(pfn + 1, n - 1, STRUCT_PAGE_BYTES)
        else:
            lines.pages(PREP_W, pfn + 1, n - 1)
