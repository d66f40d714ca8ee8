"""The credential agent: a per-user daemon holding API keys for connectors."""

__version__ = "0.1.0"
