"""pcpd.replay.spool: model operations written once, read back once per policy."""

from pcpd.replay.spool import FLUSH_BYTES, OP, OP_ALLOC, OP_DECAY, OP_FREE, OpSpool


def test_operations_come_back_in_order_on_every_pass():
    ops = [(OP_ALLOC, 3, 9, 1, 0), (OP_DECAY, 0, 0, 0, 0), (OP_FREE, 70000, 9, 1, 0),
           (OP_ALLOC, 0, 0, 5, 1 << 40)]
    with OpSpool() as spool:
        for op in ops:
            spool.add(*op)
        assert spool.count == len(ops)
        assert list(spool) == ops
        assert list(spool) == ops            # readable again for the next policy


def test_operations_past_the_write_buffer_are_all_kept():
    n = 3 * FLUSH_BYTES // OP.size + 7      # several flushes, and a partial buffer at the end
    with OpSpool() as spool:
        for i in range(n):
            spool.add(OP_ALLOC, i % 4, i % 11, i % 6, i)
        ops = list(spool)
    assert len(ops) == n == spool.count
    assert ops[-1] == (OP_ALLOC, (n - 1) % 4, (n - 1) % 11, (n - 1) % 6, n - 1)
    assert [block for *_, block in ops] == list(range(n))


def test_an_empty_spool_reads_nothing():
    with OpSpool() as spool:
        assert list(spool) == [] and spool.count == 0
