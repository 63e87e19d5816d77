"""The `hdme-focus` command line: parse, call one procedure, print. No logic here.

`app.py` builds the Typer app and registers every command group; `common.py`
holds what the commands share (options, Enum choices, the estimator loader and
the mapping of errors to one line and an exit code).
"""
