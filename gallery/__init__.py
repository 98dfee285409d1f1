"""A server's public gallery of shared image sets: web pages and thumbnails (no Discord)."""
