"""An example pcpd policy plug-in: ``legacy`` without the PCP's THP lists.

Linux 6.11 gave the PCP two lists for PMD-sized THPs (order 9); before that
every THP came from and went to the buddy under zone->lock.  This policy is
today's kernel with those lists taken away, so an experiment can show what
they buy.  It is also the smallest complete plug-in: one module, one class
implementing the ``workers.policies.base.Policy`` interface (here by
subclassing ``LegacyPolicy`` and overriding two of its hooks), its traits in
``TRAITS``, and one entry point in the ``pcpd.policies`` group (see
pyproject.toml).
"""

from __future__ import annotations

from pcpd.kernel import HPAGE_PMD_ORDER, STRUCT_PAGE_BYTES
from pcpd.policies import PolicyTraits
from workers.policies.struct_page import LegacyPolicy


class NoThpPcpPolicy(LegacyPolicy):
    """Legacy, with order-9 blocks always allocated from and freed to the buddy."""

    name = "example-nothp"
    TRAITS = PolicyTraits(
        name="example-nothp",
        description="legacy without the THP PCP lists: order-9 blocks always go through the buddy",
        memdesc=False, typed_pcps=False,
        record_sizes=(STRUCT_PAGE_BYTES,), default_record_bytes=STRUCT_PAGE_BYTES)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        for lists in self._lists:                  # no list to allocate order 9 from:
            lists[HPAGE_PMD_ORDER] = None          # alloc() takes rmqueue_buddy()

    def _before_pcp_free(self, pfn: int, order: int, t: int) -> int:
        if order == HPAGE_PMD_ORDER:               # free_one_page(), as before 6.11
            self._free_buddy(pfn, order, t)
            return -1
        return super()._before_pcp_free(pfn, order, t)
