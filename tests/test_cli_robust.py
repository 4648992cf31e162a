"""The ``iem`` command under hostile but realistic input: no silent wrong numbers, no lost
work, no tracebacks. Each test reproduces one case found by trying the tool as a user
would (0/1 masks, phone photos, huge scans, full disks, killed runs, changed settings).

Folders are tiny generated images, IEM runs a few iterations at a small size on the CPU.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import iemlib.folder
import iemlib.iem
from iemlib import IEMConfig, segment
from iemlib.cli import EXIT_BAD_INPUT, EXIT_WRITE
from iemlib.images import image_to_array, read_image

from test_cli import (assert_binary_mask, assert_one_line_error, error_lines, horse_image,
                      horses, make_set, run, summary, synthetic)  # noqa: F401 (horses: a fixture)

#: A small size keeps IEM to milliseconds per image.
QUICK = ["--iters", "5", "--device", "cpu", "--quiet", "--size", "32"]


# tensors this small are fastest on one thread (see conftest.one_thread)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def photos(tmp_path) -> Path:
    """Three good images of two shapes."""
    src = tmp_path / "in"
    src.mkdir()
    synthetic(40, 36, seed=1).save(src / "a.png")
    synthetic(40, 36, seed=2).save(src / "b.png")
    synthetic(36, 44, seed=3).save(src / "c.jpg")
    return src


def skipped_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("iem: skipped:")]


def no_segment(*args, **kwargs):
    raise AssertionError("IEM ran although the run should have been refused before any work")


# ------------------------------------------------------------ 1, 2: masks read correctly
def _labelled_set(tmp_path: Path, horses: Path, encode) -> Path:
    root = make_set(tmp_path, horses, {"a": 1, "b": 2, "c": 3})
    for m in (root / "masks").iterdir():
        with Image.open(m) as img:
            arr = np.asarray(img)
        encode(arr).save(m)
    return root


@pytest.mark.parametrize("encoding", ["zero_one", "green", "blue_palette"])
def test_evaluate_reads_01_and_colour_masks_like_0_255(tmp_path, capsys, horses, encoding):
    def encode(arr):
        fg = arr == 255
        if encoding == "zero_one":
            return Image.fromarray(fg.astype(np.uint8))
        colour = np.zeros(arr.shape + (3,), np.uint8)
        colour[fg] = (0, 255, 0) if encoding == "green" else (0, 0, 160)
        img = Image.fromarray(colour)
        return img if encoding == "green" else img.convert("P", palette=Image.ADAPTIVE, colors=2)

    reference = make_set(tmp_path / "ref", horses, {"a": 1, "b": 2, "c": 3})
    other = _labelled_set(tmp_path / encoding, horses, encode)
    status, out_ref, err = run(capsys, "evaluate", reference, "--json", *QUICK[:-2])
    assert status == 0, err
    status, out, err = run(capsys, "evaluate", other, "--json", *QUICK[:-2])
    assert status == 0, err
    got, want = json.loads(out), json.loads(out_ref)
    assert want["iou"] > 10
    assert {k: got[k] for k in ("n", "acc", "iou", "dice")} == \
        {k: want[k] for k in ("n", "acc", "iou", "dice")}


def test_evaluate_leaves_out_and_names_an_image_without_labelled_pixels(tmp_path, capsys, horses):
    full = make_set(tmp_path / "full", horses, {"a": 1, "b": 2, "c": 3, "d": 4})
    fewer = make_set(tmp_path / "fewer", horses, {"a": 1, "b": 2, "d": 4})
    with Image.open(full / "masks" / "c.png") as m:
        Image.new("L", m.size, 128).save(full / "masks" / "c.png")  # all unknown
    status, out, err = run(capsys, "evaluate", full, "--json", *QUICK[:-2])
    assert status == 0, err
    notes = [line for line in err.splitlines() if line.startswith("iem: note:")]
    assert len(notes) == 1 and "c.jpg" in notes[0] and "left out" in notes[0]
    got = json.loads(out)
    assert got["n"] == 3 and got["unlabelled"] == 1
    status, out, _ = run(capsys, "evaluate", fewer, "--json", *QUICK[:-2])
    want = json.loads(out)
    assert {k: got[k] for k in ("acc", "iou", "dice")} == {k: want[k] for k in ("acc", "iou", "dice")}


def test_evaluate_with_no_labelled_pixel_at_all_is_refused(tmp_path, capsys, horses):
    root = make_set(tmp_path / "s", horses, {"a": 1})
    with Image.open(root / "masks" / "a.png") as m:
        Image.new("L", m.size, 128).save(root / "masks" / "a.png")
    status, out, err = run(capsys, "evaluate", root, "--json", *QUICK[:-2])
    assert_one_line_error(status, err, str(root), "labelled")
    assert out == ""


# ----------------------------------------------------------------- 3: EXIF orientation
def test_phone_photo_mask_is_written_in_the_displayed_orientation(tmp_path, capsys, horses):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo = Image.open(horse_image(horses, 1))          # stored 347 x 256
    exif = photo.getexif()
    exif[0x0112] = 6                                     # shown turned: 256 x 347
    photo.save(src / "phone.jpg", exif=exif.tobytes(), quality=95)

    status, _, err = run(capsys, "segment", src, out, *QUICK)
    assert status == 0, err
    mask = assert_binary_mask(out / "phone.png", (256, 347))
    shown = read_image(src / "phone.jpg")
    assert shown.size == (256, 347)
    x = torch.from_numpy(image_to_array(shown, 32, crop=False))[None]
    m = segment(x, IEMConfig(iters=5, device="cpu")).masks[0, 0].numpy()
    expected = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((256, 347), Image.NEAREST))
    np.testing.assert_array_equal(mask, expected)
    status, _, err = run(capsys, "segment", src, out, *QUICK)   # and it counts as done
    assert summary(err) == (0, 1, 0)


# ------------------------------------------------------------ 4: decompression bombs
def test_image_over_the_pixel_limit_is_one_bad_file(tmp_path, capsys, photos, monkeypatch):
    synthetic(300, 200, seed=4).save(photos / "scan.png")   # 60,000 px, over 2 x 20,000
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    assert status == EXIT_BAD_INPUT and "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 1 and "scan.png" in errors[0] and "megapixels" in errors[0]
    assert summary(err) == (3, 0, 1)
    assert sorted(p.name for p in out.glob("*.png")) == ["a.png", "b.png", "c.png"]


def test_large_legal_image_gets_one_warning_line_and_is_segmented(tmp_path, capsys, photos,
                                                                  monkeypatch):
    synthetic(180, 150, seed=4).save(photos / "big.png")    # 27,000 px: over 20,000, legal
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    status, _, err = run(capsys, "segment", photos, tmp_path / "out", *QUICK)
    assert status == 0, err
    warns = [line for line in err.splitlines() if "warning" in line.lower()]
    assert len(warns) == 1 and warns[0].startswith("iem: warning: ") and "big.png" in warns[0]
    assert "DecompressionBomb" not in err
    assert summary(err) == (4, 0, 0)


# ------------------------------------------------ 6: truncated masks, leftovers, SIGTERM
def test_truncated_mask_with_a_valid_header_is_redone(tmp_path, capsys, photos):
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    assert status == 0, err
    whole = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(whole[: len(whole) // 2])
    with Image.open(out / "a.png") as m:               # the header still reads
        assert m.size == (40, 36)
    (out / ".b.x1y2z3.png.part").write_bytes(b"\x89PNG half")   # left by a SIGKILL
    (out / "keep.part").write_text("not ours")

    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    assert status == 0, err
    assert summary(err) == (1, 2, 0)
    assert (out / "a.png").read_bytes() == whole
    assert not (out / ".b.x1y2z3.png.part").exists() and (out / "keep.part").exists()


def _wait_for(predicate, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_and_a_concurrent_run(tmp_path, capsys):
    """A real process: while it works, a second run on the same output folder refuses at
    once; SIGTERM then stops the first with the one line of Ctrl-C, keeping its masks."""
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(40):
        synthetic(150 + i, 130, seed=i).save(src / f"img_{i:02d}.png")  # 40 shapes
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "iemlib", "segment", str(src), str(out),
                             "--iters", "150", "--device", "cpu", "--quiet"],
                            stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert _wait_for(lambda: any(out.glob("*.png")) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()

        status, _, err = run(capsys, "segment", src, out, "--iters", "150", "--device", "cpu",
                             "--quiet")
        assert status == EXIT_WRITE
        assert_one_line_error(status, err, str(out), "another")

        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == \
        "iem: interrupted; masks written so far are kept, rerun to resume"
    done = sorted(out.glob("*.png"))
    assert 1 <= len(done) < 40
    for m in done:
        with Image.open(m) as img:
            img.load()
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


# ----------------------------------------------------------------- 7: output failures
def test_output_folder_under_a_file_is_refused_before_any_work(tmp_path, capsys, photos,
                                                               monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(iemlib.iem, "segment", no_segment)
    status, _, err = run(capsys, "segment", photos, tmp_path / "afile" / "masks", *QUICK)
    assert status == EXIT_WRITE
    assert_one_line_error(status, err, "afile")


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_unwritable_output_folder_is_refused_before_any_work(tmp_path, capsys, photos,
                                                             monkeypatch, code):
    """Read-only file system, permission denied: both surface when the first file is
    created, which the run tries before segmenting anything."""
    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(iemlib.folder.tempfile, "mkstemp", refuse)
    monkeypatch.setattr(iemlib.iem, "segment", no_segment)
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    assert status == EXIT_WRITE
    assert_one_line_error(status, err, str(out), os.strerror(code))


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0,
                    reason="permissions do not bind root")
def test_read_only_output_folder_for_real(tmp_path, capsys, photos):
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o500)
    try:
        status, _, err = run(capsys, "segment", photos, out, *QUICK)
    finally:
        out.chmod(0o700)
    assert status == EXIT_WRITE
    assert_one_line_error(status, err, str(out))


def test_full_disk_is_one_line_naming_the_file_and_keeps_earlier_masks(tmp_path, capsys,
                                                                       photos, monkeypatch):
    real_save = Image.Image.save
    calls = []

    def disk_full_on_second(self, fp, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            fp.write(b"\x89PNG\r\n\x1a\n")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", disk_full_on_second)
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    monkeypatch.undo()
    assert status == EXIT_WRITE
    line = assert_one_line_error(status, err, "No space left on device")
    assert len(list(out.glob("*.png"))) == 1
    written = next(out.glob("*.png"))
    assert_binary_mask(written, Image.open(photos / (written.stem + ".png")).size)
    assert any(n in line for n in ("a.png", "b.png", "c.png")) and written.name not in line
    assert not [p for p in out.iterdir() if p.name.endswith(".part")]


def test_demo_figure_under_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(iemlib.iem, "segment", no_segment)
    status, _, err = run(capsys, "demo", "--out", tmp_path / "afile" / "demo.png", "--n", "1",
                         "--iters", "1", "--device", "cpu", "--quiet")
    assert status == EXIT_WRITE
    assert_one_line_error(status, err, "afile")


# --------------------------------------------------------------- 8: non-UTF-8 listings
def test_non_utf8_cub_listing_does_not_crash_list_or_evaluate(tmp_path, capsys, monkeypatch):
    root = tmp_path / "data"
    cub = root / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    (cub / "segmentations").mkdir()
    (cub / "images.txt").write_bytes("1 001.Bird/Ois\xe9au.jpg\n".encode("latin-1"))
    (cub / "train_val_test_split.txt").write_text("1 2\n")
    monkeypatch.setenv("IEM_DATA_DIR", str(root))

    status, out, err = run(capsys, "data", "list")
    assert status == 0 and "Traceback" not in err, err
    assert "present: demo\n" in out
    assert any(line.startswith("not usable: cub:") and "UTF-8" in line for line in out.splitlines())
    status, out, err = run(capsys, "evaluate", "no_such_set", *QUICK[:-2])
    assert_one_line_error(status, err, "no_such_set", "demo")
    status, out, err = run(capsys, "evaluate", "cub", *QUICK[:-2])
    assert_one_line_error(status, err, "images.txt", "UTF-8")


# ------------------------------------------------------------------ 9: bad settings
@pytest.mark.parametrize("option, value, named", [
    ("--device", "meta", "meta"),
    ("--device", "mps", "mps"),
    ("--device", "tpu", "tpu"),
    ("--iters", str(10**20), "--iters"),
    ("--iters", str(2**63 - 1), "--iters"),
    ("--size", "100000", "--size"),
    ("--lam", "inf", "--lam"),
])
def test_settings_that_ended_in_a_traceback_are_refused(tmp_path, capsys, photos, option,
                                                        value, named, monkeypatch):
    if value == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has an MPS device")
    monkeypatch.setattr(iemlib.iem, "segment", no_segment)
    out = tmp_path / "out"
    argv = [a for a in QUICK if a not in ("--device", "cpu")] + [option, value]
    status, _, err = run(capsys, "segment", photos, out, *argv)
    assert status == EXIT_BAD_INPUT
    assert_one_line_error(status, err, named)
    assert not out.exists()


# ------------------------------------------------------------ 10: every skip reported
def test_every_entry_not_segmented_is_reported_and_counted(tmp_path, capsys, photos):
    synthetic(40, 36, seed=5).convert("P").save(photos / "anim.gif")
    (photos / "gone.jpg").symlink_to(tmp_path / "missing.jpg")
    (photos / "folder.jpg").mkdir()
    (photos / "nested").mkdir()
    synthetic(40, 36, seed=6).save(photos / "nested" / "deep.png")
    (photos / "notes.txt").write_text("x")
    out = tmp_path / "out"

    status, _, err = run(capsys, "segment", photos, out, *QUICK)

    assert status == EXIT_BAD_INPUT and "Traceback" not in err
    errors = error_lines(err)
    assert len(errors) == 2
    assert any("gone.jpg" in e and "link" in e for e in errors)
    assert any("folder.jpg" in e for e in errors)
    skipped = skipped_lines(err)
    assert len(skipped) == 2
    assert any("nested" in s and "not searched" in s for s in skipped)
    assert any("notes.txt" in s for s in skipped)
    assert summary(err, ignored=2) == (4, 0, 2)           # the GIF's first frame was used
    assert_binary_mask(out / "anim.png", (40, 36))


# ------------------------------------------------------- 11: settings and concurrency
def test_rerun_with_other_settings_refuses_then_overwrite_redoes(tmp_path, capsys, photos):
    out = tmp_path / "out"
    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    assert status == 0, err
    manifest = json.loads((out / "iem.json").read_text())
    assert manifest["settings"]["iters"] == 5 and manifest["settings"]["size"] == 32
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}

    status, _, err = run(capsys, "segment", photos, out, *QUICK, "--paper")
    assert status == EXIT_BAD_INPUT
    line = assert_one_line_error(status, err, str(out), "--overwrite", "init_sizes")
    assert "[78]" in line and "[44, 78, 92]" in line
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before

    # settings that do not change masks may change
    status, _, err = run(capsys, "segment", photos, out, *QUICK, "--batch-size", "7")
    assert status == 0 and summary(err) == (0, 3, 0), err

    status, _, err = run(capsys, "segment", photos, out, *QUICK, "--paper", "--overwrite")
    assert status == 0 and summary(err) == (3, 0, 0), err
    assert json.loads((out / "iem.json").read_text())["settings"]["init_sizes"] == [44, 78, 92]
    status, _, err = run(capsys, "segment", photos, out, *QUICK, "--paper")
    assert status == 0 and summary(err) == (0, 3, 0), err


def test_interrupted_overwrite_with_other_settings_leaves_no_old_mask(tmp_path, capsys, photos,
                                                                      monkeypatch):
    out = tmp_path / "out"
    assert run(capsys, "segment", photos, out, *QUICK)[0] == 0

    monkeypatch.setattr(iemlib.iem, "segment", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    status, _, _ = run(capsys, "segment", photos, out, *QUICK, "--iters", "7", "--overwrite")
    assert status == 130
    monkeypatch.undo()
    # the masks of 5 iterations are gone: the folder never mixes two settings
    assert list(out.glob("*.png")) == []
    status, _, err = run(capsys, "segment", photos, out, *QUICK, "--iters", "7")
    assert status == 0 and summary(err) == (3, 0, 0), err


def test_masks_without_a_manifest_are_not_silently_kept(tmp_path, capsys, photos):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("L", (40, 36), 255).save(out / "a.png")     # from some earlier tool
    status, _, err = run(capsys, "segment", photos, out, *QUICK)
    assert_one_line_error(status, err, "iem.json", "--overwrite")
    status, _, err = run(capsys, "segment", photos, out, *QUICK, "--overwrite")
    assert status == 0 and summary(err) == (3, 0, 0), err


def test_second_run_on_a_locked_output_folder_refuses(tmp_path, capsys, photos, monkeypatch):
    import fcntl
    out = tmp_path / "out"
    out.mkdir()
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)   # as a running iem segment holds it
        monkeypatch.setattr(iemlib.iem, "segment", no_segment)
        status, _, err = run(capsys, "segment", photos, out, *QUICK)
    finally:
        os.close(fd)
    assert status == EXIT_WRITE
    assert_one_line_error(status, err, str(out), "another")


def test_dataset_selection_streams_and_matches_the_library(tmp_path, capsys, monkeypatch):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        synthetic(40, 36, seed=20 + i).save(src / f"s{i}.png")
    args = ["segment", src, out, *QUICK, "--paper", "--select", "dataset"]
    status, _, err = run(capsys, *args)
    assert status == 0 and summary(err) == (5, 0, 0), err
    files = sorted(src.glob("*.png"))
    x = torch.from_numpy(np.stack([image_to_array(read_image(f), 32, crop=False) for f in files]))
    result = segment(x, IEMConfig.paper(iters=5, device="cpu", select="dataset"))
    for f, m in zip(files, result.masks[:, 0].numpy()):
        expected = np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((40, 36), Image.NEAREST))
        np.testing.assert_array_equal(assert_binary_mask(out / f.name, (40, 36)), expected)
    choice = json.loads((out / "iem.json").read_text())["dataset_choice"]
    assert choice["square"] == result.init_sizes[int(result.init_index[0])]

    # a rerun reuses the recorded choice: only the missing mask is computed, one square
    (out / "s3.png").unlink()
    seen = []
    real = iemlib.iem.segment

    def spy(x, cfg, **kwargs):
        seen.append((len(x), cfg.init_sizes))
        return real(x, cfg, **kwargs)

    monkeypatch.setattr(iemlib.iem, "segment", spy)
    status, _, err = run(capsys, *args)
    assert status == 0 and summary(err) == (1, 4, 0), err
    assert seen == [(1, (choice["square"],))]
    # new images: the choice no longer holds
    synthetic(40, 36, seed=30).save(src / "s9.png")
    status, _, err = run(capsys, *args)
    assert_one_line_error(status, err, "--overwrite", "changed")


# --------------------------------------------------------------------- 12: data list
def test_data_list_says_when_the_root_is_missing_or_a_file(tmp_path, capsys):
    status, out, err = run(capsys, "data", "list", "--root", tmp_path / "nowhere")
    assert status == 0, err
    assert "nowhere" in out and "no such folder" in out
    (tmp_path / "afile").write_text("x")
    status, _, err = run(capsys, "data", "list", "--root", tmp_path / "afile")
    assert_one_line_error(status, err, "afile", "not a folder")


def test_data_list_names_a_set_folder_that_does_not_open(tmp_path, capsys):
    broken = tmp_path / "mine"
    (broken / "images").mkdir(parents=True)
    (broken / "masks").mkdir()
    synthetic(40, 36).save(broken / "images" / "a.png")       # no mask for it
    status, out, err = run(capsys, "data", "list", "--root", tmp_path)
    assert status == 0, err
    assert "present: demo\n" in out
    line = next(line for line in out.splitlines() if line.startswith("not usable: mine:"))
    assert "a.png" in line


def test_data_list_and_verify_agree_on_a_half_unpacked_download(tmp_path, capsys, shared_dir):
    setid = shared_dir / "reference" / "flowers102_setid.mat"
    if not setid.is_file():
        pytest.skip(f"{setid} not present")
    flowers = tmp_path / "flowers102"
    (flowers / "jpg").mkdir(parents=True)
    (flowers / "segmim").mkdir()
    shutil.copy(setid, flowers / "setid.mat")
    status, out, err = run(capsys, "data", "list", "--root", tmp_path)
    assert status == 0, err
    present = next(line for line in out.splitlines() if line.startswith("present:"))
    assert "flowers102" not in present
    assert "flowers102" in next(line for line in out.splitlines() if line.startswith("not usable"))
    status, _, err = run(capsys, "data", "verify", "flowers102", "--root", tmp_path)
    assert status != 0 and "flowers102" in err


def test_verify_of_an_empty_split_says_so(tmp_path, capsys, shared_dir):
    split = shared_dir / "reference" / "cub_train_val_test_split.txt"
    if not split.is_file():
        pytest.skip(f"{split} not present")
    cub = tmp_path / "CUB_200_2011"
    (cub / "images").mkdir(parents=True)
    (cub / "segmentations").mkdir()
    shutil.copy(split, cub / "train_val_test_split.txt")
    (cub / "images.txt").write_text("1 001.Bird/Bird_1.jpg\n")   # id 1 is a training image
    status, _, err = run(capsys, "data", "verify", "cub", "--root", tmp_path)
    line = assert_one_line_error(status, err, "test split")
    assert "list index" not in line
