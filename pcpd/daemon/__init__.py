"""``pcpd run``: the daemon that supervises the per-CPU workers of one shared zone.

``supervisor`` (the ``Daemon``: starting, watching and restarting workers; the
main loop), ``slots`` (a CPU's worker, life after life), ``parking`` (workers
parked between operations), ``audit`` (conservation from the page array),
``recovery`` (a dead worker's pages back to the buddy), ``reload`` (SIGHUP),
``drains`` (drain_all_pages), ``signals``, ``faults`` (--kill-interval),
``report`` (what a run returns), ``console`` (what ``pcpd run`` prints) and
``command`` (the command line).
"""
