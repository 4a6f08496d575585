"""The extraction worker: one run trained and measured into one shard."""
