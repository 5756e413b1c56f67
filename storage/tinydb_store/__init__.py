"""The embedded TinyDB backend (single process, crash-safe, cost independent of history)."""

from .backend import TinyLedger

__all__ = ["TinyLedger"]
