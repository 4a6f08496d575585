"""Training, snapshot extraction and orchestration for the snapshot atlas."""

__version__ = "0.1.0"
