"""spikewatch: continuous WebSocket spike and recovery prober."""

__version__ = "0.1.0"
