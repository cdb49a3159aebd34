"""How a mesh process starts another mesh process: one place, for every caller.

`mesh up` runs its services as `mesh inject …`, `mesh up --detach` its daemon,
`mesh inject`/`mesh gateway` re-exec themselves lean, the demo runs its apps and
`mesh install-service` writes ExecStart= lines. All of them need "this same mesh,
whatever the working directory": ``mesh_command()`` is that argv prefix.

- From a single-file build (a zipapp made by ``scripts/build``): the same
  interpreter on the same file, ``python3 /usr/local/bin/mesh``. The file's own
  bootstrap puts its dependencies on the path; ``python -m mesh`` could not find them.
- From an installed package (a venv, ``pip install``): ``python -P -m mesh``.
  ``-P`` keeps the working directory off ``sys.path``: a folder named ``mesh``
  there (the parent of a clone, say) would shadow the package, and the child
  would fail with ``cannot import name '__version__' from 'mesh' (unknown location)``.
  Only when mesh itself was found through ``sys.path[0]`` (``python -m mesh`` in a
  checkout that is not installed) is ``-P`` left out, or the child would not find it.

This module must stay cheap to import: the lean sidecar uses it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# The single-file build this process runs from, set by its entry point (mesh.cli.single_file_main).
_archive: str | None = None


def set_archive(path: str) -> None:
    """Called once by the single-file entry point: the file that holds this mesh."""
    global _archive
    _archive = os.path.abspath(path)  # before anything changes the working directory


def mesh_command(*, inherit_flags: bool = True) -> list[str]:
    """The argv prefix that runs this same mesh (add `--home H`, the command, its options).
    A new child process also needs ``child_env()``; an ``os.execv`` of this very process does not.
    ``inherit_flags`` False: without this interpreter's -X, -W, -B… (a unit file for later boots)."""
    flags = _interpreter_flags() if inherit_flags else []
    if _archive is not None:
        return [sys.executable, *flags, _archive]
    root = Path(__file__).resolve().parent.parent
    first = Path(sys.path[0] or ".").resolve() if sys.path else None
    if "-P" not in flags and "-I" not in flags and first != root:
        flags.append("-P")
    return [sys.executable, *flags, "-m", "mesh"]


def child_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a new mesh child process (not an exec in place): systemd's
    notification socket stays with the unit's main process."""
    from mesh.sd_notify import without_notify

    return without_notify(os.environ if base is None else base)


def executable() -> str | None:
    """The file a user runs as `mesh` for this installation: the single file, or the `mesh`
    script beside the venv's python; None when there is none (python -m mesh)."""
    if _archive is not None:
        return _archive
    candidate = Path(sys.executable).parent / "mesh"
    return str(candidate) if candidate.exists() else None


def _interpreter_flags() -> list[str]:
    """The flags this interpreter runs with (-X, -W, -E, -I…), as subprocesses of the test suite
    and of Python's own multiprocessing pass them on."""
    import subprocess

    return list(subprocess._args_from_interpreter_flags())  # type: ignore[attr-defined]
