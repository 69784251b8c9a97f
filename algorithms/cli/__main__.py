"""``python -m algorithms.cli``: the ``advgame`` command."""

from algorithms.cli.main import main

raise SystemExit(main())
