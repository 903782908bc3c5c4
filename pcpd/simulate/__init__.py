"""Virtual-time mode (``pcpd simulate``): N CPUs in one process, interleaved by a discrete-event clock.

* ``costs``: the cost model, its constants (the config's ``[simulate]`` table) and their sources;
* ``clock``: each CPU's virtual clock, and zone->lock as a virtual resource with FIFO waiters;
* ``engine``: the runner: the real model (zone, PCPs, policies, rings) driven by the real workloads;
* ``output``: results files, report and the summary in the formats of real mode, labelled virtual;
* ``command``: the ``pcpd simulate`` subcommand.

Real mode (``pcpd run``, ``pcpd experiment``) runs one process per CPU on this
machine: real kills, real waits, and on a small machine mostly its scheduler's
timing.  Virtual mode runs any number of CPUs deterministically: the same seed
and config give the same counts and the same virtual times.  docs/simulate.md
describes both and the cost model.
"""
