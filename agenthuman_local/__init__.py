"""AgentHuman Local: a real-time talking-avatar server with the hosted AgentHuman API."""

__version__ = "0.1.0"
