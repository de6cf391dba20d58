"""The node API: `cloche node` serves a node's `Node` interface (node/api.py) over
HTTPS, and `RemoteNode` implements the same interface as its client, so a control plane
on another machine drives sandboxes exactly as `cloche up` drives its own."""
