"""`cloche cluster local`: a real cluster on one machine, for trying cluster mode and for
the tests. Each service it runs (etcd, PostgreSQL, SeaweedFS, server replicas, nodes)
has a module of its own; `launcher` starts, supervises and stops them, `front` gives the
replicas one address and `table` shows the nodes while it runs.
"""
