"""``pcpd replay``: a real kernel allocation trace run under each policy.

Given the text of the kmem page-allocator tracepoints (``perf script``,
``trace-cmd report`` or the ftrace ``trace`` file, any era that
``pcpd.replay.trace`` reads, plain, gzip or xz), answer: what would each policy
have done, and touched, on this machine's own allocation stream?

Two passes, neither holding the trace:

1. ``decode`` parses the trace once and turns its events into model
   operations, spooled to an anonymous temporary file (``spool``: 15 bytes an
   operation; parsing a line costs more than replaying it, so the trace is
   parsed once whatever the number of policies).  It also counts what the
   trace itself recorded: events by name and order, and the PCP refills and
   drains (``decode.TracePcp``).
2. ``run`` runs the spooled operations through one fresh model per policy:
   one arena, one ``CpuAllocator`` per trace CPU (slot = index of the CPU in
   the sorted list of CPUs that allocate or free), in the zone that ``zone``
   sets up, brought first to the start state that ``start`` plans (each
   CPU's ``high`` and PCP lists, the blocks allocated before the capture,
   free pages and pageblocks: from a zoneinfo taken when the trace began
   and from what the trace itself shows).

``report`` turns the runs into the results.json object and the terminal
report; ``command`` is the whole replay and the ``pcpd replay`` subcommand.
``capture`` is ``pcpd capture``, which records a trace with the zone state
around it into one ``bundle`` that ``pcpd replay`` reads directly.

Memory grows with the live allocations of the trace (a dict of live blocks
in each pass), never with its length; a line of the trace costs at most
``pcpd.inputs.MAX_LINE`` characters of memory, however long it is.
"""
