"""SpecQuant: exact speculative decoding for local LLMs.

The engine imports no inference library at module load; backends load on first use.
"""
__version__ = "0.1.0"
