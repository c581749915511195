"""``python -m jobhost`` is the ``jobhost`` command."""

from jobhost.cli import main

main()
