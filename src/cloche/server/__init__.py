"""The HTTP API: app factory, middleware and routes."""
