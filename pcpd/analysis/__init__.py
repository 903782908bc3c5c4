"""What runs produce: results files, reports, comparisons, experiments and cost tables."""
