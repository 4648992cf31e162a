"""iemlib.atomic: outputs appear whole or not at all, readable by others."""
import os
import stat

import pytest

from iemlib.atomic import atomic_path


def test_replaces_in_one_rename_with_ordinary_permissions(tmp_path):
    target = tmp_path / "sub" / "table.md"
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            assert tmp.parent == target.parent and tmp.name.startswith(".table.")
            assert tmp.suffix == ".md" and not target.exists()
            tmp.write_text("new")
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["table.md"]


def test_an_error_keeps_the_old_file_and_leaves_nothing(tmp_path):
    target = tmp_path / "mask.png"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target, suffix=".png.part") as tmp:
            assert tmp.name.endswith(".png.part")
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["mask.png"]
