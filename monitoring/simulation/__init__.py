"""Simulated traffic for demos and checks: drives the real data plane end to end."""
