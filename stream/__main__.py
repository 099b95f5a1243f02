"""``python -m stream`` runs the ``fraudstream`` command line."""

from stream.cli import main

main()
