"""The ``hybrid`` command line. Exit codes: 0 done, 1 an operation failed, 2 bad usage or config,
3 (``status`` and the like) the thing asked about is not running or not set up.

One module per command group; ``root`` assembles them under ``hybrid``. Every command takes the top-level
:class:`~hybrid.cli.context.Context` with ``@pass_context`` and prints through :mod:`hybrid.cli.output`.
Command bodies import the layers below them when they run, not at start: ``hybrid --help`` and each command start
without loading boto3, openstacksdk or the model unless that command needs them.
"""
from hybrid.cli.context import Context
from hybrid.cli.root import main, run

__all__ = ["Context", "main", "run"]
