"""The shared evaluation sets from their listed source files: small source trees built here
(with a matching source list), served from a mirror folder or a local HTTP server."""
from __future__ import annotations

import hashlib
import http.server
import io
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iemlib import download as dl
from iemlib.cli import main
from iemlib.convert import ConversionRules, mask_values, save_pair, target_size
from iemlib.sourcefiles import DownloadError, FetchConfig, origin_from

FAST = FetchConfig(workers=2, timeout=5, retries=0, backoff=0)
REPO, COMMIT = "someone/some-repo", "0123456789abcdef0123456789abcdef01234567"


# ------------------------------------------------------------------------ building trees
def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _gradient(w: int, h: int, alpha: bool = False) -> Image.Image:
    """A smooth colour image with detail in both directions (resampling shows)."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1),
                    (x * y) % 256], axis=-1).astype(np.uint8)
    if alpha:
        a = np.full((h, w, 1), 255, np.uint8)
        a[:, : w // 2] = 40
        return Image.fromarray(np.concatenate([rgb, a], axis=-1), "RGBA")
    return Image.fromarray(rgb, "RGB")


def _columns(values, h: int, width: int = 1) -> np.ndarray:
    """(h, len(values) * width) uint8: column block k holds values[k]."""
    return np.repeat(np.asarray(values, np.uint8)[None, :], h, axis=0).repeat(width, axis=1)


def _horse_files() -> dict[str, bytes]:
    d = "weizmann_horse_db/"
    big_mask = np.zeros((280, 300), np.uint8)
    big_mask[:, :150] = 1                                          # 0 / 1 labels
    rgb_mask = np.zeros((30, 40, 3), np.uint8)
    rgb_mask[:, :20] = (200, 0, 0)      # first channel 200 (foreground), grey 60
    rgb_mask[:, 20:] = (0, 255, 255)    # first channel 0 (background), grey 179
    small_mask = _columns([200] * 10 + [100] * 5 + [0] * 5, 15)   # 20 x 15, half size
    return {
        d + "horse_train/h1.png": _encode(_gradient(300, 280), "PNG"),
        d + "mask_train/h1.png": _encode(Image.fromarray(big_mask), "PNG"),
        d + "horse_train/h2.png": _encode(_gradient(40, 30, alpha=True), "PNG"),
        d + "mask_train/h2.png": _encode(Image.fromarray(rgb_mask), "PNG"),
        d + "horse_test/h3.png": _encode(_gradient(40, 30), "PNG"),
        d + "mask_test/h3.png": _encode(Image.fromarray(small_mask), "PNG"),
    }


TRIMAP_IN = [0, 49, 50, 128, 200, 201, 255]
TRIMAP_OUT = [0, 0, 128, 128, 128, 255, 255]      # > 200 fg, < 50 bg, between unknown


def _grabcut_files() -> dict[str, bytes]:
    d = "datasets/GrabCut/"
    red_white = np.zeros((30, 40, 3), np.uint8)
    red_white[:, :20] = (255, 0, 0)     # grey 76: unknown (its first channel would be 255)
    red_white[:, 20:] = (255, 255, 255)
    big = np.zeros((450, 600), np.uint8)
    big[100:300, 200:400] = 255
    return {
        d + "data_GT/a.jpg": _encode(_gradient(35, 30), "JPEG", quality=90,
                                     comment=b"made by hand"),
        d + "boundary_GT/a.bmp": _encode(Image.fromarray(_columns(TRIMAP_IN, 30, 5)), "BMP"),
        d + "data_GT/m.JPG": _encode(_gradient(40, 30), "JPEG"),
        d + "boundary_GT/m.bmp": _encode(Image.fromarray(red_white), "BMP"),
        d + "data_GT/c.bmp": _encode(_gradient(600, 450), "BMP"),
        d + "boundary_GT/c.bmp": _encode(Image.fromarray(big), "BMP"),
    }


COCO_NAMES = ("baseball bat00_000000000001", "baseball bat01_000000000001")


def _coco_files() -> dict[str, bytes]:
    d = "datasets/COCO_MVal/"
    photo = _encode(_gradient(48, 32), "JPEG")
    mask = np.zeros((32, 48), np.uint8)
    mask[8:24, 12:36] = 255
    files = {}
    for name in COCO_NAMES:     # one photograph listed twice, as in the real list
        files[f"{d}img/{name}.jpg"] = photo
        files[f"{d}gt/{name}.png"] = _encode(Image.fromarray(mask), "PNG")
    return files


SETS = {"weizmann_horse": _horse_files, "grabcut": _grabcut_files, "coco_mval": _coco_files}


@pytest.fixture
def mirror(tmp_path, monkeypatch) -> Path:
    """A folder laid out like the source repositories, and a source list of its files
    (real sizes and SHA-256) put in place of the packaged one."""
    tree = tmp_path / "mirror"
    listing = {"about": "test"}
    for name, make in SETS.items():
        entries = []
        for path, data in make().items():
            (tree / path).parent.mkdir(parents=True, exist_ok=True)
            (tree / path).write_bytes(data)
            entries.append({"path": path, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
        listing[name] = {"repo": REPO, "commit": COMMIT, "files": entries}
    src_list = tmp_path / "dataset_sources.json"
    src_list.write_text(json.dumps(listing))
    monkeypatch.setattr(dl, "SOURCE_LIST", src_list)
    return tree


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror folder; ``server.plan`` maps a path to "404", "503 once" or a
    delay in seconds; every requested path is logged in ``server.log``."""

    def do_GET(self):
        path = self.path.lstrip("/")
        self.server.log.append(path)
        action = self.server.plan.get(path)
        if action == "404":
            return self.send_error(404)
        if action == "503 once":
            del self.server.plan[path]
            return self.send_error(503)
        if isinstance(action, float):
            time.sleep(action)
        return super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(mirror):
    """An HTTP server on 127.0.0.1 serving the mirror folder, in a thread."""
    handler = lambda *a, **kw: _Handler(*a, directory=str(mirror), **kw)  # noqa: E731
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    srv.handle_error = lambda *a: None   # a client that gave up is not an error here
    srv.log, srv.plan = [], {}
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def _no_empty_folders(root: Path) -> bool:
    return all(any(d.iterdir()) for d in [root, *root.rglob("*")] if d.is_dir())


def _mask(path: Path) -> np.ndarray:
    with Image.open(path) as m:
        assert m.mode == "L" and m.format == "PNG"
        return np.asarray(m)


# ------------------------------------------------------------------------------ the rules
def test_target_size_follows_the_256_rule():
    assert target_size(100, 50) == (100, 50)             # small: unchanged
    assert target_size(256, 4000) == (256, 4000)         # shorter side exactly 256
    assert target_size(257, 257) == (256, 256)
    assert target_size(300, 280) == (274, 256)           # 300 * 256 / 280 = 274.29
    assert target_size(481, 321) == (384, 256)           # 383.55 rounds up (not floor)
    assert target_size(321, 481) == (256, 384)
    assert target_size(442, 350) == (323, 256)           # 323.29 rounds down (not ceil)
    assert target_size(513, 512) == (256, 256)           # 256.5: Python's round, half to even
    assert target_size(10, 20, max_side=5) == (5, 10)


def test_mask_value_rules():
    binary = ConversionRules(values="binary")
    assert mask_values(np.array([[0, 1], [1, 0]]), binary).tolist() == [[0, 255], [255, 0]]
    # with a maximum above 1, the threshold is 127: a 1 is background there
    assert mask_values(np.array([0, 1, 127, 128, 255]), binary).tolist() == [0, 0, 0, 255, 255]
    assert mask_values(np.array([False, True]), binary).tolist() == [0, 255]
    assert mask_values(np.array([0, 300, 65535], np.uint16), binary).tolist() == [0, 255, 255]
    trimap = ConversionRules(channel="grey", values="trimap")
    assert mask_values(np.array(TRIMAP_IN), trimap).tolist() == TRIMAP_OUT
    with pytest.raises(ValueError):
        ConversionRules(values="otsu")


def test_registry_knows_the_three_sets_and_their_rules():
    for name in ("weizmann_horse", "grabcut", "coco_mval"):
        assert dl.SPECS[name].listing is not None and dl.SPECS[name].folder == name
    assert dl.SPECS["grabcut"].listing.rules == ConversionRules(channel="grey", values="trimap")
    assert dl.SPECS["coco_mval"].listing.rules == ConversionRules(channel="first", values="binary")
    assert dl.spec_for("Weizmann")[0] == "weizmann_horse"


def test_packaged_source_list_is_the_reference_list(shared_dir):
    assert dl.SOURCE_LIST.read_bytes() == (shared_dir / "reference" / "dataset_sources.json").read_bytes()
    # the pair counts of shared/data/README.md, every listed file in exactly one pair
    for name, pairs in (("weizmann_horse", 327), ("grabcut", 50), ("coco_mval", 800)):
        sources = dl.source_list(name)
        assert len(dl.listed_pairs(name, dl.SPECS[name].listing, sources)) == pairs
        assert len(sources.files) == 2 * pairs


def test_default_origin_is_github_at_the_listed_commit():
    origin = origin_from(None, "SamsungLabs/ritm_interactive_segmentation", COMMIT)
    assert origin.url("datasets/COCO_MVal/img/baseball bat00_1.jpg") == (
        "https://raw.githubusercontent.com/SamsungLabs/ritm_interactive_segmentation/"
        f"{COMMIT}/datasets/COCO_MVal/img/baseball%20bat00_1.jpg")
    assert origin_from("https://example.org/m/", REPO, COMMIT).url("a b/c.png") == \
        "https://example.org/m/a%20b/c.png"
    with pytest.raises(DownloadError, match="neither a folder nor"):
        origin_from("no/such/folder", REPO, COMMIT)


# ---------------------------------------------------------------------- mirror folder
def test_weizmann_from_a_mirror_folder(tmp_path, mirror):
    root = tmp_path / "data"
    before = {p: p.stat().st_mtime_ns for p in mirror.rglob("*")}
    folder = dl.download("weizmann_horse", root, progress=False, source=str(mirror))
    assert _tree(root) == {"weizmann_horse", "weizmann_horse/images", "weizmann_horse/masks",
                           *(f"weizmann_horse/{k}/h{i}.{e}" for i in (1, 2, 3)
                             for k, e in (("images", "jpg"), ("masks", "png")))}
    assert {p: p.stat().st_mtime_ns for p in mirror.rglob("*")} == before   # read in place

    # h1: 300 x 280 -> 274 x 256, written out as data/README.md's steps say
    src = Image.open(mirror / "weizmann_horse_db/horse_train/h1.png").convert("RGB")
    expected = _encode(src.resize((274, 256), Image.BICUBIC), "JPEG", quality=95)
    assert (folder / "images/h1.jpg").read_bytes() == expected
    labels = np.asarray(Image.open(mirror / "weizmann_horse_db/mask_train/h1.png"))
    expected_mask = Image.fromarray((labels > 0).astype(np.uint8) * 255).resize((274, 256), Image.NEAREST)
    assert np.array_equal(_mask(folder / "masks/h1.png"), np.asarray(expected_mask))
    assert set(np.unique(_mask(folder / "masks/h1.png"))) == {0, 255}

    # h2: RGBA -> RGB drops alpha; an RGB mask keeps its first channel
    rgba = np.asarray(Image.open(mirror / "weizmann_horse_db/horse_train/h2.png"))
    expected = _encode(Image.fromarray(rgba[..., :3]), "JPEG", quality=95)
    assert (folder / "images/h2.jpg").read_bytes() == expected
    assert np.array_equal(_mask(folder / "masks/h2.png"), _columns([255] * 20 + [0] * 20, 30))

    # h3: a half-size mask with values 0 / 100 / 200 (threshold 127), scaled up NEAREST
    assert np.array_equal(_mask(folder / "masks/h3.png"), _columns([255] * 20 + [0] * 20, 30))
    assert Image.open(folder / "images/h3.jpg").size == (40, 30)
    assert "3 image/mask pairs" in dl.verify("weizmann_horse", root)


def test_grabcut_trimap_grey_masks_and_bmp_images(tmp_path, mirror):
    folder = dl.download("grabcut", tmp_path / "data", progress=False, source=str(mirror))
    assert sorted(p.name for p in (folder / "images").iterdir()) == ["a.jpg", "c.jpg", "m.jpg"]
    assert np.array_equal(_mask(folder / "masks/a.png"), _columns(TRIMAP_OUT, 30, 5))
    assert np.array_equal(_mask(folder / "masks/m.png"), _columns([128] * 20 + [255] * 20, 30))
    # 600 x 450 BMP -> 341 x 256 (341.33), the mask with it
    with Image.open(folder / "images/c.jpg") as im:
        assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (341, 256))
    assert _mask(folder / "masks/c.png").shape == (256, 341)
    # Pillow carries a JPEG source's comment into the converted file, as in the shared copy
    with Image.open(folder / "images/a.jpg") as im:
        assert im.info.get("comment") == b"made by hand"
    with Image.open(folder / "images/m.jpg") as im:
        assert "comment" not in im.info


def test_corrupted_or_missing_mirror_file_is_a_clear_error(tmp_path, mirror):
    bad = mirror / "datasets/GrabCut/boundary_GT/m.bmp"
    data = bytearray(bad.read_bytes())
    data[-1] ^= 0xFF                                        # same size, other content
    bad.write_bytes(bytes(data))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match=r"^datasets/GrabCut/boundary_GT/m\.bmp: "
                                            r"SHA-256 .* \(mirror file .*m\.bmp\)$"):
        dl.download("grabcut", root, progress=False, source=str(mirror))
    assert not root.exists()                                # nothing created, nothing left
    bad.write_bytes(bytes(data[:-1]))
    with pytest.raises(DownloadError, match=r"m\.bmp: \d+ bytes, expected \d+"):
        dl.download("grabcut", root, progress=False, source=str(mirror))
    bad.unlink()
    with pytest.raises(DownloadError, match=r"m\.bmp: not in the mirror folder"):
        dl.download("grabcut", root, progress=False, source=str(mirror))
    assert not root.exists()


def test_unreadable_source_leaves_no_half_converted_set(tmp_path, mirror, monkeypatch):
    listing = json.loads(dl.SOURCE_LIST.read_text())
    junk = b"not an image at all"
    entry = next(f for f in listing["coco_mval"]["files"] if f["path"].endswith("01_000000000001.jpg"))
    (mirror / entry["path"]).write_bytes(junk)
    entry.update(bytes=len(junk), sha256=hashlib.sha256(junk).hexdigest())
    dl.SOURCE_LIST.write_text(json.dumps(listing))
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(DownloadError, match=r"baseball bat01_000000000001\.jpg: not a readable image"):
        dl.download("coco_mval", root, progress=False, source=str(mirror))
    assert _tree(root) == set()            # the first pair was converted, then all removed


# ---------------------------------------------------------------------- base URL (HTTP)
def test_coco_from_a_base_url_with_spaces_in_names(tmp_path, server):
    root = tmp_path / "data"
    folder = dl.download("coco_mval", root, progress=False, source=server.url, config=FAST)
    names = sorted(p.stem for p in (folder / "images").iterdir())
    assert names == sorted(COCO_NAMES)
    assert sorted(server.log) == sorted(f"datasets/COCO_MVal/{d}/{n}.{e}".replace(" ", "%20")
                                        for n in COCO_NAMES for d, e in (("img", "jpg"), ("gt", "png")))
    # the same photograph listed twice gives the same bytes twice
    a, b = (folder / "images" / f"{n}.jpg" for n in COCO_NAMES)
    assert a.read_bytes() == b.read_bytes()
    assert {p.split("/")[0] for p in _tree(root)} == {"coco_mval"}   # sources removed
    # a rerun finds the set and fetches nothing, even with the server gone
    server.log.clear()
    dl.download("coco_mval", root, progress=False, source="http://127.0.0.1:9", config=FAST)
    assert server.log == []


def test_bad_file_from_the_server_fails_and_leaves_only_checked_files(tmp_path, server, mirror):
    root = tmp_path / "data"
    for path, damage, message in (
            ("datasets/GrabCut/data_GT/a.jpg", lambda d: d[:10], r"10 bytes, expected \d+"),
            ("datasets/GrabCut/data_GT/m.JPG", lambda d: d + b"more", "more than the listed"),
            ("datasets/GrabCut/data_GT/c.bmp", lambda d: d[:-1] + b"?", "SHA-256 [0-9a-f]+, expected")):
        shutil.rmtree(root, ignore_errors=True)   # else a file kept from the run before is reused
        good = (mirror / path).read_bytes()
        (mirror / path).write_bytes(damage(good))
        with pytest.raises(DownloadError, match=f"^{path}: {message} .*from http.*; not kept$"):
            dl.download("grabcut", root, progress=False, source=server.url, config=FAST)
        (mirror / path).write_bytes(good)
        assert not (root / "grabcut").exists()
        assert not [p for p in root.rglob("*") if p.name.endswith(".part") or "converting" in p.name]
        assert _no_empty_folders(root)
        cached = root / ".downloads/grabcut" / path
        assert not cached.exists()                       # never kept; the others are intact
        for p in (root / ".downloads/grabcut").rglob("*"):
            if p.is_file():
                rel = p.relative_to(root / ".downloads/grabcut").as_posix()
                assert p.read_bytes() == (mirror / rel).read_bytes(), rel


def test_http_404_and_timeout_are_one_line_errors(tmp_path, server):
    server.plan["datasets/COCO_MVal/gt/baseball%20bat00_000000000001.png"] = "404"
    root = tmp_path / "data"
    with pytest.raises(DownloadError) as err:
        dl.download("coco_mval", root, progress=False, source=server.url,
                    config=FetchConfig(workers=1, timeout=5, retries=3, backoff=0))
    msg = str(err.value)
    assert msg.startswith("datasets/COCO_MVal/gt/baseball bat00_000000000001.png: download failed")
    assert "HTTP 404" in msg and "\n" not in msg and "attempts" not in msg   # 404: no retry
    server.plan.clear()
    server.plan["datasets/COCO_MVal/gt/baseball%20bat00_000000000001.png"] = 1.5
    with pytest.raises(DownloadError, match=r"bat00_000000000001\.png: download failed "
                                            r".*timed out after 0\.3 s"):
        dl.download("coco_mval", root, progress=False, source=server.url,
                    config=FetchConfig(workers=2, timeout=0.3, retries=0))
    assert not (root / "coco_mval").exists() and _no_empty_folders(root)


def test_transient_error_is_retried(tmp_path, server):
    path = "datasets/COCO_MVal/img/baseball%20bat01_000000000001.jpg"
    server.plan[path] = "503 once"
    dl.download("coco_mval", tmp_path / "data", progress=False, source=server.url,
                config=FetchConfig(workers=1, timeout=5, retries=1, backoff=0))
    assert server.log.count(path) == 2


def test_resume_after_an_interrupted_download(tmp_path, server):
    missing = "weizmann_horse_db/mask_test/h3.png"
    server.plan[missing] = "404"
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="h3.png: download failed"):
        dl.download("weizmann_horse", root, progress=False, source=server.url, config=FAST)
    cache = root / ".downloads/weizmann_horse"
    kept = {p.relative_to(cache).as_posix() for p in cache.rglob("*.png")}
    assert missing not in kept and len(kept) >= 1
    # what a killed run leaves: a half-written .part, and a cached file cut short
    (cache / (missing + ".part")).parent.mkdir(parents=True, exist_ok=True)
    (cache / (missing + ".part")).write_bytes(b"half")
    cut = sorted(kept)[0]
    (cache / cut).write_bytes((cache / cut).read_bytes()[:100])
    server.plan.clear()
    server.log.clear()
    folder = dl.download("weizmann_horse", root, progress=False, source=server.url, config=FAST)
    all_files = {p for p in _horse_files()}
    assert sorted(server.log) == sorted((all_files - kept) | {cut})   # only what was not intact
    assert len(list((folder / "images").iterdir())) == 3
    assert {p.split("/")[0] for p in _tree(root)} == {"weizmann_horse"}


def test_an_existing_set_is_kept_and_checked(tmp_path, mirror):
    root = tmp_path / "data"
    folder = dl.download("weizmann_horse", root, progress=False, source=str(mirror))
    (folder / "masks/h2.png").unlink()
    with pytest.raises(DownloadError, match=r"incomplete, missing 1 of 3 image/mask pairs \(first: h2\)"):
        dl.verify("weizmann_horse", root)
    with pytest.raises(DownloadError, match="incomplete"):
        dl.download("weizmann_horse", root, progress=False, source=str(mirror))
    assert (folder / "masks/h1.png").is_file()          # a user's folder is never replaced
    with pytest.raises(DownloadError, match="missing the whole set"):
        dl.verify("grabcut", root)


def test_keep_archives_keeps_the_fetched_sources(tmp_path, server):
    root = tmp_path / "data"
    dl.download("grabcut", root, keep_archives=True, progress=False, source=server.url,
                config=FAST)
    kept = {p.relative_to(root / ".downloads/grabcut").as_posix()
            for p in (root / ".downloads/grabcut").rglob("*") if p.is_file()}
    assert kept == set(_grabcut_files())


# ------------------------------------------------------------------------- command line
def test_cli_download_verify_list_with_source(tmp_path, mirror, capsys):
    root = str(tmp_path / "data")
    assert main(["data", "download", "grabcut", "--root", root, "--source", str(mirror),
                 "--quiet"]) == 0
    assert "grabcut: 3 image/mask pairs" in capsys.readouterr().out
    assert main(["data", "verify", "grabcut", "--root", root]) == 0
    assert capsys.readouterr().out.startswith("grabcut: 3 image/mask pairs in ")
    assert main(["data", "list", "--root", root]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "grabcut" in out[1] and "coco_mval" in out[2] and "weizmann_horse" in out[2]
    for argv, message in (
            (["data", "download", "coco_mval", "--source", str(tmp_path / "nowhere")],
             "neither a folder nor"),
            (["data", "verify", "grabcut", "--source", str(mirror)], "download only"),
            (["data", "download", "flowers102", "--source", str(mirror)], "only for the sets"),
            (["data", "verify", "coco_mval"], "missing the whole set")):
        assert main(argv + ["--root", str(tmp_path / "other")]) == 1
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "other").exists()
    not_a_folder = tmp_path / "a_file"
    not_a_folder.write_text("")
    for source in (str(mirror), "http://127.0.0.1:9"):
        assert main(["data", "download", "grabcut", "--root", str(not_a_folder), "--quiet",
                     "--source", source]) == 1
        err = capsys.readouterr().err.strip()
        assert "Not a directory" in err and len(err.splitlines()) == 1, err


# ------------------------------------------------------- against the shared converted sets
def test_256_rule_matches_the_shared_grabcut_sizes(shared_dir):
    """The 11 GrabCut images that are uncompressed 24-bit BMPs give their source size away
    in their listed byte count (54-byte header, rows padded to 4 bytes); the shared copy's
    size must follow from it by the 256 rule."""
    sizes = {}
    for f in dl.source_list("grabcut").files:
        if "/data_GT/" in f.path and f.path.endswith(".bmp"):
            stem = Path(f.path).stem
            candidates = [(w, (f.bytes - 54) // ((3 * w + 3) // 4 * 4)) for w in range(1, 2000)
                          if (f.bytes - 54) % ((3 * w + 3) // 4 * 4) == 0]
            with Image.open(shared_dir / "data/grabcut/images" / f"{stem}.jpg") as im:
                sizes[stem] = [c for c in candidates if target_size(*c) == im.size]
    assert len(sizes) == 11 and all(sizes.values()), sizes
    assert sizes["llama"] == [(513, 371)]      # 353.98: round, not floor
    assert sizes["fullmoon"] == [(442, 350)]   # 323.29: round, not ceil


@pytest.mark.parametrize("name", ["weizmann_horse", "grabcut", "coco_mval"])
def test_writer_matches_the_shared_encoding(shared_dir, tmp_path, name):
    """Masks written from the shared masks' pixels are byte-identical to them, and the
    JPEG headers (quality 95 tables, subsampling, JFIF, comment) to the shared images'."""
    def header(data: bytes) -> bytes:
        return data[: data.index(b"\xff\xda")]     # up to the start of scan

    images = sorted((shared_dir / "data" / name / "images").glob("*.jpg"))[:: 40]
    rules = dl.SPECS[name].listing.rules
    for path in images:
        mask_path = path.parent.parent / "masks" / f"{path.stem}.png"
        with Image.open(path) as im, Image.open(mask_path) as m:
            im.load()
            save_pair(im, Image.fromarray(np.asarray(m)), tmp_path, path.stem, rules)
        assert (tmp_path / "masks" / mask_path.name).read_bytes() == mask_path.read_bytes()
        assert header((tmp_path / "images" / path.name).read_bytes()) == header(path.read_bytes())
