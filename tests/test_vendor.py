"""Vendored front-end files are the ones recorded, each with its licence beside it."""

import hashlib
from pathlib import Path

from django.conf import settings

VENDOR = Path(settings.BASE_DIR) / "static" / "vendor"


def recorded_sums():
    lines = (VENDOR / "SHA256SUMS").read_text().splitlines()
    return {name: digest for digest, name in (line.split(maxsplit=1) for line in lines if line.strip())}


def test_every_vendored_script_matches_its_recorded_checksum():
    sums = recorded_sums()
    scripts = sorted(str(path.relative_to(VENDOR)) for path in VENDOR.rglob("*.js"))
    assert scripts == sorted(sums)
    for name, digest in sums.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name


def test_every_library_keeps_its_licence_and_is_listed_in_the_readme():
    readme = (VENDOR / "README.md").read_text()
    for folder in sorted(path for path in VENDOR.iterdir() if path.is_dir()):
        assert (folder / "LICENSE").stat().st_size > 0, folder.name
        assert f"`{folder.name}/" in readme, folder.name
