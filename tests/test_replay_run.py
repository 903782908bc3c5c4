"""pcpd.replay.run: pass 2, the spooled operations through one policy's model."""

from replay_lines import ANON, alloc, free

from pcpd.replay.decode import decode
from pcpd.replay.report import policy_figures
from pcpd.replay.run import replay_policy
from pcpd.replay.spool import OpSpool
from pcpd.replay.trace import parse_lines
from pcpd.spec import ModelSpec


def test_model_allocation_failures_are_counted_not_errors():
    # 24 order-7 blocks (3072 pages) live at once in a 2048-page zone
    lines = [alloc(0x100000 + 128 * i, 7, ANON) for i in range(24)]
    lines += [free(0x100000 + 128 * i, 7) for i in range(24)]
    with OpSpool() as spool:
        d = decode(parse_lines(lines, "test"), spool, 0)
        run = replay_policy(spool, d.cpus, ModelSpec(pages=2048, policy="legacy", ncpus=1))
    figures = policy_figures(run)
    assert figures["alloc_failures"] > 0
    assert figures["frees_skipped"] == figures["alloc_failures"]
    assert figures["frees"] + figures["frees_skipped"] == 24 and figures["audit_ok"]
