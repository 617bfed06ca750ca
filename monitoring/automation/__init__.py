"""What runs on its own: the monitor, governance, compensation and the beat schedule."""
