"""The rule language: CEL conditions compiled, bounded, costed, redacted, evaluated. No Django."""
