"""comet-relay: a self-hosted, first-party tracking relay for the Create Event API."""

__version__ = "0.1.0"
