"""Telling people: the message of an event and its dispatch to Slack and e-mail."""
