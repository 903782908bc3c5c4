"""``pcpd replay``: a real kernel allocation trace run under each policy."""
