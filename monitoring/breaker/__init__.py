"""The circuit breaker: its state machine and the one store all processes share."""
