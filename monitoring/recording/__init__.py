"""What the data plane hands over per execute: the log entry and the breaker's count."""
