"""mesh: a lightweight service mesh for laptops and bare-metal hosts."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
