"""pcpd: an allocator stress and experiment service for Linux PCP designs."""

__version__ = "0.1.0"
