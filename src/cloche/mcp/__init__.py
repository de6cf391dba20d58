"""cloche as an MCP server: sandboxes as tools for any MCP client.

`server.build` defines the tools once, over the SDK's `AsyncClient`; each transport
only says which client a call gets. `stdio` (`cloche mcp`) gives every call one client
with the key from `CLOCHE_API_KEY` / `--api-key`; `http` (`/mcp` on `cloche up`) gives
each call a client with the key of the HTTP request that carried it, talking to this
same server over loopback, so tenancy, quotas, rate limits and errors are the API's.
"""
