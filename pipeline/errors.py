"""Errors that reach the user as one line naming the field or file at fault."""


class PipelineError(Exception):
    """Base class: the CLI prints ``error: <message>`` and exits with status 2."""


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
