"""Shironzi: a multi-tenant lakehouse platform kernel.

Importing this package must stay fast: heavy engines are imported where they are used.
"""

__version__ = "0.1.0"
