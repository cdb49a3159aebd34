"""Diagnostics: `mesh check` (``mesh.debug.check``: categories of checkers) and the models
and renderers behind `mesh top`, `tap`, `stat` and `edges`.

Each tool keeps its decisions pure and its rendering separate from its I/O.
"""
