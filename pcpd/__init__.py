"""pcpd: an allocator stress and experiment service for Linux PCP designs."""

from pcpd import core

__version__ = "0.1.0"

core.choose()
