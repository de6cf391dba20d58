"""The node runtime: turns a sandbox spec into an isolated runc container on this host."""
