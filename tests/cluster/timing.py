"""The lease timing every cluster test uses: short, so the suite stays fast."""

TTL = 2  # etcd's minimum lease TTL with its default election timing
MARGIN = 0.8  # fence 1.2 s after the last renewal sent, 0.8 s before etcd can expire it
