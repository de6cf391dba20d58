"""Cluster coordination on etcd: node membership, leader election, one instance per key
and self-fencing, plus the PostgreSQL half of fencing. Cluster mode stands on etcd's
leases and transactions instead of consensus of its own; docs/cluster.md has the key
layout, the TTLs and the fencing arithmetic.
"""
