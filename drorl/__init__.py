"""drorl: distributionally robust and pessimistic reinforcement learning from fixed data."""

__version__ = "0.1.0"
