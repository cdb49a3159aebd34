from __future__ import annotations

from pathlib import Path

import pytest

from mesh.home import MeshHome
from mesh.identity import CertificateAuthority


@pytest.fixture
def home(tmp_path: Path) -> MeshHome:
    return MeshHome(tmp_path / "home")


@pytest.fixture
def ca(home: MeshHome) -> CertificateAuthority:
    return CertificateAuthority.init(home)


@pytest.fixture
def other_ca(tmp_path: Path) -> CertificateAuthority:
    """A second, unrelated CA with the same trust domain: its leaves must never be trusted."""
    return CertificateAuthority.init(MeshHome(tmp_path / "other-home"))
