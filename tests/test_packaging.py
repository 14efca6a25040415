"""The `channels/` folder ships as the import package `warnd_channels`.

`channels` is Django Channels' import name on PyPI; shipping ours under it
would break any environment that has both. These tests prove the mapping
from the editable install this suite runs in and from a built wheel.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_editable_install_maps_channels_folder_to_warnd_channels(tmp_path: Path) -> None:
    # Run outside the repository: from its root, the folder itself would be
    # importable as `channels` through the current directory on sys.path.
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import importlib.util, warnd_channels;"
            "print(warnd_channels.__file__);"
            "spec = importlib.util.find_spec('channels');"
            "print(spec.origin if spec else None)",
        ],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
    )
    ours, theirs = probe.stdout.split()
    assert Path(ours).resolve() == REPO / "channels" / "__init__.py"
    assert theirs == "None" or not theirs.startswith(str(REPO)), (
        "warnd must not install an import package named `channels`"
    )


def test_built_wheel_ships_warnd_channels_and_no_channels_package(tmp_path: Path) -> None:
    out = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(REPO)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = out.glob("warnd-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "warnd_channels/__init__.py" in names
    assert "warnd/data/cap12.xsd" in names
    for data in ("templates/base.html", "static/console.js", "messages/en.toml"):
        assert f"warnd/console/{data}" in names, data  # the console's package data
    assert not any(n.startswith("channels/") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    # Installed from the wheel alone (no site-packages, so not the editable
    # finder), warnd_channels imports from the installed copy.
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import warnd_channels, sys; print(warnd_channels.__file__)"],
        check=True,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env={"PYTHONPATH": str(target)},
    )
    assert Path(probe.stdout.strip()).resolve() == (target / "warnd_channels" / "__init__.py")
