"""`pip install .` (not only editable) ships every module, script and SQL file of the package,
and every file of static/."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support import ROOT


def test_the_wheel_ships_static_and_the_console_script(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "-q", "-w", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("comet_relay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    static = [p.name for p in (ROOT / "static").iterdir() if p.is_file() and p.suffix in {".js", ".html", ".css"}]
    assert static, "static/ has no files to ship"
    missing = [n for n in static if f"relay/static/{n}" not in names]
    assert not missing, f"not in the wheel: {missing}"
    # every module, Lua script and SQL file of relay/, wherever it sits
    sources = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "relay").rglob("*")
        if p.suffix in {".py", ".lua", ".sql"} and "__pycache__" not in p.parts
    ]
    assert "relay/cli/__init__.py" in sources and "relay/store/sqlite/schema.sql" in sources
    unshipped = [name for name in sources if name not in names]
    assert not unshipped, f"not in the wheel: {unshipped}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "comet-relay = relay.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
