"""The chat side: Bolt wiring, thin listeners, Block Kit views and the Slack implementation of the notifier."""
