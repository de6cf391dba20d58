"""The ``cloche`` command line: run the server; drive sandboxes, their network and ports,
files, snapshots, apps, agents, state, secrets and tenants; ``cloche demo`` and ``cloche sim``.

Every command that talks to a server takes ``--url`` and ``--api-key``, defaulting to
the ``CLOCHE_URL`` and ``CLOCHE_API_KEY`` environment variables.  Results go to stdout
(ids, tables, JSON, file contents); progress, spinners and errors go to stderr, so the
output composes with pipes: ``ID=$(cloche sandbox create)``.

One module per command group (``sandboxes``, ``files``, ``state``, ...), each with its
own Typer app; :mod:`~cloche.cli.root` mounts them.  Shared parts: :mod:`~cloche.cli.options`
(the options and client), :mod:`~cloche.cli.ui` (consoles, tables, progress) and
:mod:`~cloche.cli.errors` (API errors to messages and exit codes).
"""

from cloche.cli.root import app, main

__all__ = ["app", "main"]
