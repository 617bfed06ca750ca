"""The execution log's storage: column expressions, day partitions, rollups, retention."""
