"""Errors that reach the user as one line naming the field or file at fault."""


class PipelineError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2.

    ``field`` names the argument of the library call the error concerns (``shards``, ``workers``,
    ``checkpoints``, ``data_name``, ...), when it is one: the CLI prefixes the message with the flag that
    sets it. A config key or a file is named in the message itself."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ConfigError(PipelineError):
    """A config file is malformed: the message names the file and the key."""


class DatasetError(PipelineError):
    """A data set is unknown, unreadable or unusable after preprocessing."""


class ShardError(PipelineError):
    """A shard folder is incomplete or its files do not match the manifest."""


class ShardVersionError(ShardError):
    """A shard was written by another shard schema version: stale, not partial."""


class SchemaError(PipelineError):
    """A database was written by another schema version of this tool."""


class StoreError(PipelineError):
    """The shard store or an output folder cannot be written (read-only, full, unreachable): not a
    fault of one run, so extraction stops instead of retrying every run."""
