"""Content-addressed snapshots of a sandbox's writable layer: content-defined chunks,
zstd-compressed, stored once per hash in a blob store, verified on every read."""
