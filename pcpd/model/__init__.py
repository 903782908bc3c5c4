"""The shared model: the page arena, its struct page array, the buddy zone and its lock,
the descriptor slab, the cross-CPU rings and the per-CPU statistics blocks."""
