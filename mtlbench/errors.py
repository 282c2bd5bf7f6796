"""Errors a user can cause and fix. The CLI prints their message alone, never a traceback."""


class MtlbenchError(Exception):
    """A mistake in the user's input (config, names, data paths) with a message that says what to do."""


class UnknownNameError(MtlbenchError, KeyError):
    """An unknown registry name; the message lists the valid ones."""

    def __init__(self, kind: str, name: str, valid: list[str]):
        self.kind, self.name, self.valid = kind, name, valid
        super().__init__(f"unknown {kind} {name!r}; valid {kind}s: {', '.join(sorted(valid)) or '(none)'}")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0]
