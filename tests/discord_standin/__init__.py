"""Local Discord stand-in (REST + gateway) for end-to-end tests; see README.md."""
