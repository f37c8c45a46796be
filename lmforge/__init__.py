"""lmforge: train transformer language models on your own data with limited hardware."""

__version__ = "0.1.0"
