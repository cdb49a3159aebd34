"""`python -m mesh` runs the CLI."""

from __future__ import annotations

from mesh.cli import main

if __name__ == "__main__":
    main()
