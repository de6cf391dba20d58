"""Lifecycle services between the HTTP layer and the node runtime: tenancy, quotas,
idempotent creates and rate limits."""
