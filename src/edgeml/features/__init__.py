"""Features: row expressions and per-entity window features, with batch/edge parity."""
