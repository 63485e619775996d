"""unlock-bot: unlock Huawei Cloud ModelArts pool nodes from Slack, with policy, approval and an audit trail."""

__version__ = "0.1.0"
