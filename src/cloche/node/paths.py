"""Where cloche's own things appear inside every sandbox: one leaf module, so that the
OCI spec builder, the drivers and the runtime agree without importing each other."""

BIN_DIR_PATH = "/.cloche/bin"  # the node's bin directory (supervisor, state clients, trust store), read-only
INIT_PATH = f"{BIN_DIR_PATH}/cloche-init"
HOST_DIR_PATH = "/.cloche/host"  # the sandbox's host directory (state and agent sockets)
SOCKET_DIR_PATH = "/.cloche/sv"  # gVisor: where cloche-init binds its socket
