"""``python -m cloche.cli``: the same CLI as the ``cloche`` console script."""

from cloche.cli import main

main()
