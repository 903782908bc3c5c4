"""Per-CPU side of pcpd: PCP caches, policies, workloads and the worker loop.

Imports flow one way: workers may import pcpd's model modules (kernel,
policies, spec, arena, zone, stats, sizing), never the daemon, exporter or CLI.
"""

import pcpd  # noqa: F401  (chooses the core's build, pcpd.core, before a module of ours loads)
