#!/usr/bin/env bash
# Install mesh from this checkout: .venv with mesh and its test extras,
# and the `mesh` executable linked into ~/.local/bin. Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
venv="$here/.venv"
stamp="$venv/.mesh-install-stamp"
bindir="${MESH_BIN_DIR:-$HOME/.local/bin}"

die() { echo "install.sh: $*" >&2; exit 1; }

find_python() {
    local candidate
    for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
        [ -n "$candidate" ] || continue
        command -v "$candidate" >/dev/null 2>&1 || continue
        if "$candidate" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

python="$(find_python)" || die "mesh needs Python 3.11 or newer; none found (set PYTHON=/path/to/python3.11)"

want="$(cat pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    echo "mesh is already installed in $venv"
else
    if [ ! -x "$venv/bin/python" ]; then
        echo "creating $venv with $python"
        "$python" -m venv "$venv" || die "could not create a virtual environment (on Debian: apt-get install python3-venv)"
    fi
    echo "installing mesh and its test dependencies (pip)"
    if ! "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"; then
        die "pip could not install mesh's dependencies; check the network access to PyPI and try again"
    fi
    echo "$want" > "$stamp"
fi

mkdir -p "$bindir"
ln -sf "$venv/bin/mesh" "$bindir/mesh"
echo "linked $bindir/mesh"
case ":$PATH:" in
    *":$bindir:"*) ;;
    *)
        # Say it for the user's own shell, in the file that shell reads at start.
        echo "note: $bindir is not on your PATH. To add it for good, then to this shell:"
        line="export PATH=\"$bindir:\$PATH\""
        case "$(basename "${SHELL:-/bin/sh}")" in
            zsh)  echo "  echo '$line' >> ~/.zshrc"; echo "  $line" ;;
            fish) echo "  fish_add_path $bindir"; echo "  (fish_add_path changes this shell too)" ;;
            bash) echo "  echo '$line' >> ~/.bashrc"; echo "  $line" ;;
            *)    echo "  echo '$line' >> ~/.profile"; echo "  $line" ;;
        esac
        ;;
esac
"$venv/bin/mesh" version
