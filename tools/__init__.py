"""Thin command-line entry points: ``python -m tools.<name> ...``, or the ``unimo-<name>`` console scripts of
an installed package (pyproject.toml). Each module's docstring starts with a command line to paste."""
