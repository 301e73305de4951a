"""fedca: experiment runner for personalized federated recommendation."""

__version__ = "0.1.0"
