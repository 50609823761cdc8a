"""In-memory stand-ins for deterministic failure branches, in addition to (never instead of) the
tests on the real API server."""
