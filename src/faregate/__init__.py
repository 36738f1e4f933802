"""faregate: an AI gateway with a billing engine inside."""

__version__ = "0.1.0"
