"""Thin Bolt listeners: each module has a `register(app, deps)`; callbacks ack first, then call the workflow."""
