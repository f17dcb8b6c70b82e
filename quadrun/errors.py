"""The four ways a run can end other than normally, in one torch-free module.

    ConfigError      bad input; exit 2, nothing created (the message is one line:
                     `key: what is wrong; what is allowed`)
    CheckpointError  a checkpoint or saved result that cannot be used (corrupt, truncated,
                     from another config); exit 2, the file is left as it is
    Interrupted      a stop was requested (a signal): the state is checkpointed and the run
                     can be resumed; exit 3
    RunFailed        the experiment raised; the summary says failed, the traceback is in the
                     run's log; exit 1
"""
from __future__ import annotations


class ConfigError(Exception):
    """Bad input. The message is one line: `key: what is wrong; what is allowed`."""


class CheckpointError(Exception):
    """A checkpoint that cannot be used (corrupt, truncated, from another run)."""


class Interrupted(Exception):
    """A stop was requested; the state is checkpointed and the run can be resumed."""


class RunFailed(Exception):
    """The run ended with status failed; the message is one line."""
