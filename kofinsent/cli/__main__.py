"""``python -m kofinsent.cli``: the ``kofinsent`` command without its console script."""
from kofinsent.cli import main

main()
