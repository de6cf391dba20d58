"""Ingress to sandbox ports ("exposed ports") through cloche's own HTTP port.

A process in a sandbox that listens on 0.0.0.0:PORT is reachable from the host at the
sandbox's address (its routed veth). This package relays clients to it, in two forms:

- by host name, E2B's form: `{port}-{id}.{ingress_domain}` (`8000-sb_x.localhost:8787`);
- by path: `/v1/sandboxes/{id}/ports/{port}/{path}`.

Access needs the sandbox's traffic token (`cloche.control.traffic`) in a header, or a
signed URL (which then sets a cookie scoped to that host or path), or nothing when the
sandbox's policy is `public`; the path form also takes the owner's API key. cloche's
credentials are stripped before anything reaches the sandbox. A sleeping sandbox is
woken first, as exec does, and traffic counts as activity for its idle policy.

Where each part lives:
- `middleware.py`: the ASGI middleware that answers ingress requests ahead of routing;
- `targets.py`: recognising the two forms (sandbox, port, path);
- `credentials.py`: token, signed URL and cookie, owner's API key;
- `proxy.py`: one request from credentials and wake to the relay;
- `headers.py`: which headers cross, which the proxy sets;
- `http_relay.py`: HTTP/1.1 over raw streams, bodies streamed both ways;
- `websocket_relay.py`: WebSockets, message by message;
- `upstream.py`: connections to the sandbox (TLS, retry after a wake, keep-alive pool);
- `activity.py`: traffic postpones the idle policy;
- `rejections.py`: the API's JSON errors, sent from ahead of routing.
"""

from cloche.server.ingress.credentials import EXPIRES_PARAM, SIGNED_PARAM
from cloche.server.ingress.middleware import Ingress, proxy_of, tokens_of
from cloche.server.ingress.targets import Target, match_host, match_path

__all__ = ["EXPIRES_PARAM", "SIGNED_PARAM", "Ingress", "Target", "match_host", "match_path", "proxy_of", "tokens_of"]
