"""lakehoused: a folder or bucket prefix turned into a small, trustworthy lakehouse."""

__version__ = "0.1.0"
