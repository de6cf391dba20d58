"""What each API endpoint is: method, path, query, body, timeout and response parser.

Every function here returns a :class:`Call` describing one HTTP request and how to turn
its successful response into a Python value.  The sync and async clients execute the very
same ``Call`` objects, so request building and response parsing live in exactly one place
(like httpx's shared request model under ``Client``/``AsyncClient``).

One module per resource (``sandboxes``, ``snapshots``, ``secrets``, ``exec``, ``files``,
``apps``, ``state``, ``admin``) over ``call`` (the request) and ``responses`` (the
parsers); this package re-exports them all, so callers keep writing ``_api.get_sandbox``.
"""

from __future__ import annotations

from .._wire import network_body
from .admin import (
    create_key,
    create_tenant,
    delete_template,
    health,
    import_template,
    list_nodes,
    list_templates,
    list_tenants,
    revoke_key,
)
from .apps import (
    _NO_JSON,
    delete_agent,
    delete_app,
    deploy_app,
    dumps,
    get_agent,
    get_app,
    invoke,
    list_agents,
    list_apps,
    move_agent,
)
from .call import CREATE_TIMEOUT, DEFAULT, INVOKE_TIMEOUT, LONG_POLL_S, TRANSFER_TIMEOUT, Body, Call, sbx
from .exec import exec_, exec_body, exec_stream, pty_url, run_code
from .files import download_tar, list_dir, mkdir, read_file, remove, rename, stat, upload_tar, write_file
from .responses import is_server_error, may_be_server_error
from .sandboxes import (
    create_sandbox,
    fork,
    get_network,
    get_sandbox,
    hibernate,
    kill_sandbox,
    list_sandboxes,
    pause,
    port_urls,
    resize_sandbox,
    resume,
    set_network,
    set_timeout,
)
from .secrets import create_secret, delete_secret, get_secret, list_secrets, rotate_secret_key, update_secret
from .snapshots import create_snapshot, delete_snapshot, get_snapshot, list_snapshots
from .state import (
    grant,
    kv_batch,
    kv_delete,
    kv_get,
    kv_list,
    kv_put,
    list_grants,
    log_append,
    log_read,
    log_trim,
    revoke,
)

__all__ = [
    "CREATE_TIMEOUT",
    "DEFAULT",
    "INVOKE_TIMEOUT",
    "LONG_POLL_S",
    "TRANSFER_TIMEOUT",
    "_NO_JSON",
    "Body",
    "Call",
    "create_key",
    "create_sandbox",
    "create_secret",
    "create_snapshot",
    "create_tenant",
    "delete_agent",
    "move_agent",
    "delete_app",
    "delete_secret",
    "delete_snapshot",
    "delete_template",
    "deploy_app",
    "download_tar",
    "dumps",
    "exec_",
    "exec_body",
    "exec_stream",
    "fork",
    "get_agent",
    "get_app",
    "get_network",
    "get_sandbox",
    "get_secret",
    "get_snapshot",
    "grant",
    "health",
    "hibernate",
    "import_template",
    "invoke",
    "is_server_error",
    "kill_sandbox",
    "kv_batch",
    "kv_delete",
    "kv_get",
    "kv_list",
    "kv_put",
    "list_agents",
    "list_apps",
    "list_dir",
    "list_grants",
    "list_nodes",
    "list_sandboxes",
    "list_secrets",
    "list_snapshots",
    "list_templates",
    "list_tenants",
    "log_append",
    "log_read",
    "log_trim",
    "may_be_server_error",
    "mkdir",
    "network_body",
    "pause",
    "port_urls",
    "pty_url",
    "read_file",
    "remove",
    "rename",
    "resize_sandbox",
    "resume",
    "revoke",
    "revoke_key",
    "rotate_secret_key",
    "run_code",
    "sbx",
    "set_network",
    "set_timeout",
    "stat",
    "update_secret",
    "upload_tar",
    "write_file",
]
