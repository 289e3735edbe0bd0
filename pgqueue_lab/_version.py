"""The version of pgqueue-lab (read by the build from here, and by every layer)."""

__version__ = "0.2.0"
