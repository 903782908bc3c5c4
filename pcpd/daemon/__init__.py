"""``pcpd run``: the supervisor of the per-CPU workers, with its audits and crash recovery."""
