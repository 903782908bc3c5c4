"""Error types, one per layer; only pcpd.cli turns them into exit codes.

UsageError and its subclasses are the user's mistake (exit 2, one line);
everything else that pcpd raises on purpose is a failed run (exit 1).
"""


class PcpdError(Exception):
    """Base of every error pcpd raises on purpose."""


class UsageError(PcpdError, ValueError):
    """Bad input from the user: a file, key, line or argument. Exit code 2."""


class ConfigError(UsageError):
    """A config file is malformed or names an impossible setting.

    The message is complete: ``path: key.path: problem``.
    """

    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path, self.key, self.problem = path, key, problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class InputError(UsageError):
    """A trace, zoneinfo or results file cannot be read."""


class ArenaError(PcpdError):
    """Shared memory could not be created, attached or checked."""


class WorkerLost(PcpdError):
    """A worker process died or stopped answering."""
