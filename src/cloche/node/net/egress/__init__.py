"""The node's egress proxy: per-host request transforms (secrets injected outside the
sandbox) and tunnelling through the user's SOCKS5 proxy, for connections the firewall
has already allowed and steered here."""
