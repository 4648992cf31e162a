"""The download path, offline: archives the tests build, served from file:// URLs."""
from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from iemlib import download as dl
from iemlib.cli import main

SHARED = Path(__file__).resolve().parents[2] / "shared" / "reference"


def _tgz(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _jpeg(rgb, size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, rgb).save(buf, format="JPEG", quality=100)
    return buf.getvalue()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def flowers_remote(tmp_path, monkeypatch):
    """A miniature Flowers-102 on 'the server': real setid.mat, one test image."""
    src = tmp_path / "server"
    src.mkdir()
    setid = src / "setid.mat"
    if (SHARED / "flowers102_setid.mat").is_file():
        shutil.copy(SHARED / "flowers102_setid.mat", setid)
    else:
        scipy.io.savemat(setid, {"trnid": np.array([[1, 2]]), "valid": np.array([[3]]),
                                 "tstid": np.array([[4]])})
    first = int(scipy.io.loadmat(setid)["trnid"][0][0])
    images = _tgz(src / "102flowers.tgz", {f"jpg/image_{first:05d}.jpg": _jpeg((200, 30, 30))})
    segs = _tgz(src / "102segmentations.tgz",
                {f"segmim/segmim_{first:05d}.jpg": _jpeg((0, 0, 254))})
    spec = dl.Spec(folder="flowers102", loader="Flowers102", files=(
        dl.Remote(images.as_uri(), "102flowers.tgz", _md5(images), ".", "jpg"),
        dl.Remote(segs.as_uri(), "102segmentations.tgz", _md5(segs), ".", "segmim"),
        dl.Remote(setid.as_uri(), "setid.mat", _md5(setid)),
    ), note="test")
    monkeypatch.setitem(dl.SPECS, "flowers102", spec)
    return spec


def test_download_unpacks_verifies_and_resumes(tmp_path, flowers_remote):
    root = tmp_path / "data"
    folder = dl.download("flowers102", root, progress=False)
    assert (folder / "setid.mat").is_file()
    assert (folder / "jpg").is_dir() and (folder / "segmim").is_dir()
    assert not (root / ".downloads").exists()          # archives removed, folder tidied
    assert not list(root.rglob("*.part"))
    assert "1020 test images" in dl.verify("flowers102", root)
    # a rerun finds everything in place and fetches nothing
    stamp = (folder / "setid.mat").stat().st_mtime_ns
    for r in flowers_remote.files:
        Path(r.url.replace("file://", "")).unlink()     # the server is gone
    dl.download("flowers102", root, progress=False)
    assert (folder / "setid.mat").stat().st_mtime_ns == stamp


def test_checksum_mismatch_removes_the_file(tmp_path, flowers_remote, monkeypatch):
    bad = dl.Remote(flowers_remote.files[2].url, "setid.mat", "0" * 32)
    monkeypatch.setitem(dl.SPECS, "flowers102", dl.Spec("flowers102", "Flowers102", (bad,)))
    with pytest.raises(dl.DownloadError, match="setid.mat: checksum mismatch"):
        dl.download("flowers102", tmp_path / "data", progress=False)
    assert not list((tmp_path / "data").rglob("setid.mat*"))


def test_unreachable_url_is_a_clear_error(tmp_path, monkeypatch):
    gone = dl.Remote((tmp_path / "missing.tgz").as_uri(), "x.tgz", None, ".", "x")
    monkeypatch.setitem(dl.SPECS, "flowers102", dl.Spec("flowers102", "Flowers102", (gone,)))
    with pytest.raises(dl.DownloadError, match="download failed"):
        dl.download("flowers102", tmp_path / "data", progress=False)
    assert not list((tmp_path / "data").rglob("*.part"))
    # nor an empty set folder that `iem data list` would show
    assert not (tmp_path / "data" / "flowers102").exists()


def test_unsafe_archive_is_refused(tmp_path):
    evil = _tgz(tmp_path / "evil.tgz", {"../escape.txt": b"x"})
    with pytest.raises(dl.DownloadError, match="cannot unpack"):
        dl.unpack(evil, tmp_path / "target")
    assert not (tmp_path / "escape.txt").exists()


def test_verify_reports_what_is_missing(tmp_path):
    (tmp_path / "flowers102" / "jpg").mkdir(parents=True)
    with pytest.raises(dl.DownloadError, match="missing segmim, setid.mat"):
        dl.verify("flowers102", tmp_path)


def test_unknown_dataset_and_aliases():
    assert dl.spec_for("Flowers")[0] == "flowers102"
    assert dl.spec_for("CUB-200-2011")[0] == "cub"
    with pytest.raises(dl.DownloadError, match="lsun"):
        dl.spec_for("lsun_car")


def test_cli_data_commands(tmp_path, flowers_remote, capsys):
    root = tmp_path / "data"
    assert main(["data", "verify", "flowers102", "--root", str(root)]) == 1
    assert "incomplete" in capsys.readouterr().err
    assert main(["data", "download", "flowers102", "--root", str(root), "--quiet"]) == 0
    assert "1020 test images" in capsys.readouterr().out
    assert main(["data", "list", "--root", str(root)]) == 0
    assert "flowers102" in capsys.readouterr().out.splitlines()[1]
    assert main(["data", "download", "--root", str(root)]) != 0


def test_published_checksums_are_well_formed():
    for key, spec in dl.SPECS.items():
        for r in spec.files:
            assert r.url.startswith("https://"), (key, r.url)
            assert r.md5 is None or (len(r.md5) == 32 and int(r.md5, 16) >= 0)
    # the one official file shared with this project matches its published checksum
    if (SHARED / "flowers102_setid.mat").is_file():
        assert _md5(SHARED / "flowers102_setid.mat") == dl.SPECS["flowers102"].files[2].md5
