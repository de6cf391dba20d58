"""Cluster mode's control-plane side: the live nodes behind one `Node` interface."""
