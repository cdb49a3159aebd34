"""`mesh ca …` as a user runs it, checked with openssl where openssl has an opinion."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def mesh(home: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "--home", str(home), "ca", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stderr
    return result


def assert_clean_failure(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    """Exit 1, one `error:` line (optionally a `hint:` line), no traceback."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("error: ")
    assert len(lines) <= 2 and all(line.startswith("hint: ") for line in lines[1:]), lines
    for needle in needles:
        assert needle in result.stderr


def split_pem(path: Path, into: Path) -> list[Path]:
    """Write each certificate of ``path`` to its own file (openssl verify wants the leaf alone)."""
    blocks = path.read_text().split("-----END CERTIFICATE-----")
    files = []
    for index, block in enumerate(b for b in blocks if "-----BEGIN CERTIFICATE-----" in b):
        target = into / f"{path.stem}-{index}.pem"
        target.write_text(block.strip() + "\n-----END CERTIFICATE-----\n")
        files.append(target)
    return files


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], check=False, capture_output=True, text=True, timeout=30)


def openssl_verify(root: Path, chain_file: Path, scratch: Path) -> subprocess.CompletedProcess[str]:
    leaf, *intermediates = split_pem(chain_file, scratch)
    assert len(intermediates) == 1
    return openssl(
        "verify",
        "-x509_strict",
        "-purpose",
        "sslclient",
        "-CAfile",
        str(root),
        "-untrusted",
        str(intermediates[0]),
        str(leaf),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


# ----------------------------------------------------------------- init


def test_init_and_refuse_reinit(home: Path) -> None:
    data = json.loads(ok(mesh(home, "init", "-o", "json")).stdout)
    assert data["trust_domain"] == "mesh.local"
    assert data["root_fingerprint"].startswith("sha256:") and len(data["root_fingerprint"]) == 71
    assert data["bundle"] == str(home / "ca" / "bundle.pem")
    assert mode(home / "ca") == 0o700
    assert mode(home / "ca" / "root.key") == 0o600
    assert mode(home / "ca" / "issuer.key") == 0o600
    root_before = (home / "ca" / "root.pem").read_bytes()

    again = mesh(home, "init")
    assert_clean_failure(again, "already exists", "--force")
    assert (home / "ca" / "root.pem").read_bytes() == root_before

    forced = json.loads(ok(mesh(home, "init", "--force", "-o", "json")).stdout)
    assert forced["root_fingerprint"] != data["root_fingerprint"]


def test_init_text_output_and_trust_domain(home: Path) -> None:
    result = ok(mesh(home, "init", "--trust-domain", "corp.example"))
    assert "corp.example" in result.stdout
    assert "sha256:" in result.stdout
    assert "…" not in result.stdout  # the fingerprint is never truncated


def test_bad_trust_domain(home: Path) -> None:
    assert_clean_failure(mesh(home, "init", "--trust-domain", "Not Valid"), "invalid trust domain")
    assert not (home / "ca").exists()


@needs_openssl
def test_openssl_agrees_with_the_root_fingerprint(home: Path) -> None:
    data = json.loads(ok(mesh(home, "init", "-o", "json")).stdout)
    printed = openssl(
        "x509", "-noout", "-fingerprint", "-sha256", "-in", str(home / "ca" / "root.pem")
    ).stdout
    hexdigits = printed.strip().split("=", 1)[1].replace(":", "").lower()
    assert data["root_fingerprint"] == "sha256:" + hexdigits


# ----------------------------------------------------------------- issue


@needs_openssl
def test_issue_then_openssl_verifies_the_leaf(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    out = tmp_path / "reviews-creds"
    data = json.loads(ok(mesh(home, "issue", "reviews", "--out", str(out), "-o", "json")).stdout)
    assert data["identity"] == "spiffe://mesh.local/svc/reviews"
    assert data["cert"] == str(out / "cert.pem")
    assert mode(out / "key.pem") == 0o600
    assert (out / "bundle.pem").read_bytes() == (home / "ca" / "bundle.pem").read_bytes()

    verdict = openssl_verify(home / "ca" / "root.pem", out / "cert.pem", tmp_path)
    assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    assert verdict.stdout.strip().endswith(": OK")

    leaf = split_pem(out / "cert.pem", tmp_path)[0]
    san = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", str(leaf))
    assert "URI:spiffe://mesh.local/svc/reviews" in san.stdout
    # the key on disk belongs to the certificate
    pub_cert = openssl("x509", "-noout", "-pubkey", "-in", str(leaf)).stdout
    pub_key = openssl("pkey", "-pubout", "-in", str(out / "key.pem")).stdout
    assert pub_cert == pub_key


def test_issue_default_dir_and_ttl(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    work = tmp_path / "work"
    work.mkdir()
    data = json.loads(
        ok(mesh(home, "issue", "ratings", "--ttl", "30m", "-o", "json", cwd=work)).stdout
    )
    assert (work / "ratings" / "cert.pem").exists()
    assert mode(work / "ratings" / "key.pem") == 0o600
    inspected = json.loads(
        ok(mesh(home, "inspect", str(work / "ratings" / "cert.pem"), "-o", "json")).stdout
    )
    assert inspected["certificates"][0]["time_left"] in ("30m", "29m 59s", "29m 58s")
    assert data["not_after"] == inspected["certificates"][0]["not_after"]


def test_issue_refuses_to_overwrite_without_force(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    out = tmp_path / "creds"
    ok(mesh(home, "issue", "reviews", "--out", str(out)))
    key_before = (out / "key.pem").read_bytes()
    assert_clean_failure(
        mesh(home, "issue", "reviews", "--out", str(out)), "already exists", "--force"
    )
    assert (out / "key.pem").read_bytes() == key_before
    ok(mesh(home, "issue", "reviews", "--out", str(out), "--force"))
    assert (out / "key.pem").read_bytes() != key_before


@pytest.mark.parametrize("name", ["Bad_Name", "x-", "a.b", "x" * 64])
def test_issue_bad_name_is_one_clear_line(home: Path, tmp_path: Path, name: str) -> None:
    ok(mesh(home, "init"))
    result = mesh(home, "issue", name, "--out", str(tmp_path / "x"))
    assert_clean_failure(result, "invalid service name")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("ttl", ["5x", "0s", "-1h", "h", "1.5h"])
def test_issue_bad_ttl(home: Path, tmp_path: Path, ttl: str) -> None:
    ok(mesh(home, "init"))
    assert_clean_failure(
        mesh(home, "issue", "a", "--ttl", ttl, "--out", str(tmp_path / "a")), "--ttl"
    )


def test_issue_ttl_beyond_the_issuer_is_refused(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    result = mesh(home, "issue", "a", "--ttl", "400d", "--out", str(tmp_path / "a"))
    assert_clean_failure(result, "longer than the issuer's remaining life", "mesh ca rotate")


def test_issue_without_a_ca(home: Path, tmp_path: Path) -> None:
    assert_clean_failure(
        mesh(home, "issue", "a", "--out", str(tmp_path / "a")), "no CA in", "mesh ca init"
    )


def test_loose_key_permissions_warn_on_stderr(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    os.chmod(home / "ca" / "issuer.key", 0o644)
    result = ok(mesh(home, "issue", "a", "--out", str(tmp_path / "a")))
    assert "warning: private key" in result.stderr and "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


# ----------------------------------------------------------------- inspect


def test_inspect_default_shows_root_and_issuer(home: Path) -> None:
    ok(mesh(home, "init"))
    text = ok(mesh(home, "inspect")).stdout
    assert "root.pem" in text and "issuer.pem" in text
    assert "spiffe://mesh.local" in text
    assert "ok:" in text and "FAILED" not in text

    data = json.loads(ok(mesh(home, "inspect", "-o", "json")).stdout)
    root, issuer = data["certificates"]
    assert root["is_ca"] and issuer["is_ca"]
    assert root["chain_ok"] and issuer["chain_ok"]
    for field in (
        "subject",
        "spiffe_id",
        "issuer",
        "serial",
        "not_before",
        "not_after",
        "time_left",
        "fingerprint",
    ):
        assert field in root
    assert root["not_after"].endswith("Z")


def test_inspect_a_leaf_chain(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    ok(mesh(home, "issue", "reviews", "--out", str(tmp_path / "r")))
    data = json.loads(
        ok(mesh(home, "inspect", str(tmp_path / "r" / "cert.pem"), "-o", "json")).stdout
    )
    leaf, issuer = data["certificates"]
    assert leaf["spiffe_id"] == "spiffe://mesh.local/svc/reviews"
    assert leaf["is_ca"] is False and issuer["is_ca"] is True
    assert leaf["chain_ok"] is True
    assert leaf["chain"].startswith("spiffe://mesh.local/svc/reviews <- ")
    text = ok(mesh(home, "inspect", str(tmp_path / "r" / "cert.pem"))).stdout
    assert "spiffe://mesh.local/svc/reviews" in text and "23h" in text


def test_inspect_a_foreign_leaf_fails_verification(home: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-home"
    ok(mesh(home, "init"))
    ok(mesh(other, "init"))
    ok(mesh(other, "issue", "reviews", "--out", str(tmp_path / "foreign")))
    data = json.loads(
        ok(mesh(home, "inspect", str(tmp_path / "foreign" / "cert.pem"), "-o", "json")).stdout
    )
    assert data["certificates"][0]["chain_ok"] is False
    assert "FAILED" in ok(mesh(home, "inspect", str(tmp_path / "foreign" / "cert.pem"))).stdout


def test_inspect_without_a_ca_still_describes_a_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ok(mesh(home, "init"))
    ok(mesh(home, "issue", "a", "--out", str(tmp_path / "a")))
    data = json.loads(
        ok(
            mesh(tmp_path / "empty", "inspect", str(tmp_path / "a" / "cert.pem"), "-o", "json")
        ).stdout
    )
    assert data["bundle"] is None
    assert data["certificates"][0]["chain_ok"] is None


def test_inspect_errors(home: Path, tmp_path: Path) -> None:
    assert_clean_failure(mesh(home, "inspect"), "no CA in")
    assert_clean_failure(mesh(home, "inspect", str(tmp_path / "missing.pem")), "does not exist")
    junk = tmp_path / "junk.pem"
    junk.write_text("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n")
    assert_clean_failure(mesh(home, "inspect", str(junk)), str(junk), "corrupted")


def test_corrupted_ca_file_is_one_line(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    issuer = home / "ca" / "issuer.pem"
    issuer.write_text(issuer.read_text()[:150] + "###\n-----END CERTIFICATE-----\n")
    assert_clean_failure(mesh(home, "issue", "a", "--out", str(tmp_path / "a")), str(issuer))


# ----------------------------------------------------------------- rotate


@needs_openssl
def test_rotate_old_and_new_leaves_verify_with_openssl(home: Path, tmp_path: Path) -> None:
    ok(mesh(home, "init"))
    bundle_before = (home / "ca" / "bundle.pem").read_bytes()
    old_issuer = (home / "ca" / "issuer.pem").read_bytes()
    ok(mesh(home, "issue", "old", "--out", str(tmp_path / "old")))

    data = json.loads(ok(mesh(home, "rotate", "-o", "json")).stdout)
    assert data["issuer_fingerprint"] != data["previous_issuer_fingerprint"]
    assert data["issuer_not_after"].endswith("Z")
    assert (home / "ca" / "issuer.pem").read_bytes() != old_issuer
    assert (home / "ca" / "bundle.pem").read_bytes() == bundle_before
    assert mode(home / "ca" / "issuer.key") == 0o600

    ok(mesh(home, "issue", "new", "--out", str(tmp_path / "new")))
    root = home / "ca" / "root.pem"
    for name in ("old", "new"):
        scratch = tmp_path / f"split-{name}"
        scratch.mkdir()
        verdict = openssl_verify(root, tmp_path / name / "cert.pem", scratch)
        assert verdict.returncode == 0, verdict.stdout + verdict.stderr
    # the new leaf carries the new issuer
    assert (
        (tmp_path / "new" / "cert.pem")
        .read_text()
        .endswith((home / "ca" / "issuer.pem").read_text())
    )

    inspected = json.loads(
        ok(mesh(home, "inspect", str(tmp_path / "old" / "cert.pem"), "-o", "json")).stdout
    )
    assert inspected["certificates"][0]["chain_ok"] is True


def test_rotate_text_output(home: Path) -> None:
    ok(mesh(home, "init"))
    text = ok(mesh(home, "rotate")).stdout
    assert "rotated the issuer" in text and "sha256:" in text


def test_rotate_without_a_ca(home: Path) -> None:
    assert_clean_failure(mesh(home, "rotate"), "no CA in", "mesh ca init")


# ----------------------------------------------------------------- start-up cost


def test_cli_start_does_not_import_cryptography() -> None:
    code = (
        "import sys, mesh.cli; print('cryptography' in sys.modules, 'mesh.identity' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=30
    )
    assert result.stdout.split() == ["False", "False"], result.stderr


def test_ca_help_lists_the_commands(tmp_path: Path) -> None:
    text = ok(mesh(tmp_path, "--help")).stdout
    for command in ("init", "issue", "inspect", "rotate"):
        assert command in text
