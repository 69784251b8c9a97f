"""The ``advgame`` command line: one subcommand per task (train, eval, redteam, demo, ...)."""
