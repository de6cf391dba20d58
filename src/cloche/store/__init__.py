"""Control-plane records (tenants, API keys, sandbox ownership)."""
