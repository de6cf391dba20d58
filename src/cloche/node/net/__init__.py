"""Sandbox networking: addresses, veth links, the nftables firewall and the DNS resolver."""
