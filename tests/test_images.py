"""Reading and pre-processing (iemlib.images): bad inputs, colour modes, resize rules,
and bit-for-bit agreement with the inputs recorded from the authors' code."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iemlib import images
from iemlib.images import (MIN_SIDE, UNKNOWN, ImageError, center_crop, list_images,
                           load_pair, read_image, read_mask, resized_shape)

SHARED = Path(__file__).resolve().parents[2] / "shared"
HORSES = SHARED / "data" / "weizmann_horse"
VECTORS = SHARED / "reference" / "authors_iem_vectors.npz"


def _rgb(h=40, w=60, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, arr, **kw):
    Image.fromarray(arr).save(path, **kw)
    return path


# ---------------------------------------------------------------- bad inputs

def test_missing_file(tmp_path):
    path = tmp_path / "nothere.jpg"
    with pytest.raises(ImageError, match="nothere.jpg"):
        read_image(path)
    with pytest.raises(ImageError, match="nothere.jpg"):
        read_mask(path)


def test_missing_folder(tmp_path):
    with pytest.raises(ImageError, match="no_such_dir"):
        list_images(tmp_path / "no_such_dir")


def test_empty_folder(tmp_path):
    folder = tmp_path / "empty_dir"
    folder.mkdir()
    (folder / "notes.txt").write_text("not an image")
    with pytest.raises(ImageError, match="empty_dir"):
        list_images(folder)


def test_non_image_with_jpg_suffix(tmp_path):
    path = tmp_path / "fake.jpg"
    path.write_text("this is text, not a JPEG\n" * 10)
    with pytest.raises(ImageError, match="fake.jpg"):
        read_image(path)


def test_truncated_jpeg(tmp_path):
    path = _save(tmp_path / "cut.jpg", _rgb(64, 64))
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        read_image(path)


def test_16_bit_png(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(np.full((32, 32), 40000, np.uint16)).save(path)
    assert Image.open(path).mode.startswith("I;16")
    with pytest.raises(ImageError, match="deep.png"):
        read_image(path)
    with pytest.raises(ImageError, match="deep.png"):
        read_mask(path)


def test_too_small(tmp_path):
    path = _save(tmp_path / "tiny.png", _rgb(MIN_SIDE - 1, 50))
    with pytest.raises(ImageError, match="tiny.png"):
        read_image(path)
    ok = _save(tmp_path / "just.png", _rgb(MIN_SIDE, 50))
    assert read_image(ok).size == (50, MIN_SIDE)


def test_image_mask_size_mismatch(tmp_path):
    img = _save(tmp_path / "photo.png", _rgb(40, 60))
    mask = _save(tmp_path / "photo_mask.png", np.zeros((40, 50), np.uint8))
    with pytest.raises(ImageError, match="photo_mask.png"):
        load_pair(img, mask)


# ---------------------------------------------------------------- colour modes

@pytest.mark.parametrize("mode", ["L", "P", "RGBA"])
def test_modes_become_rgb(tmp_path, mode):
    img = Image.fromarray(_rgb(48, 72)).convert(mode)
    assert img.mode == mode
    path = tmp_path / f"img_{mode}.png"
    img.save(path)
    assert read_image(path).mode == "RGB"
    x, y = load_pair(path)
    assert x.shape == (3, 128, 128) and x.dtype == np.float32 and y is None
    assert -1.0 <= x.min() and x.max() <= 1.0


def test_grey_image_channels_equal(tmp_path):
    path = _save(tmp_path / "grey.png", _rgb(40, 40)[..., 0])
    x, _ = load_pair(path)
    assert np.array_equal(x[0], x[1]) and np.array_equal(x[1], x[2])


def test_scaling_to_minus_one_one(tmp_path):
    arr = np.zeros((128, 128, 3), np.uint8)
    arr[:, 64:] = 255
    x, _ = load_pair(_save(tmp_path / "bw.png", arr))
    assert x[:, :, :64].min() == -1.0 and x[:, :, :64].max() == -1.0
    assert x[:, :, 64:].min() == 1.0


# ---------------------------------------------------------------- masks

def test_mask_values(tmp_path):
    arr = np.zeros((32, 48), np.uint8)
    arr[:, 16:32] = 128
    arr[:, 32:] = 255
    m = read_mask(_save(tmp_path / "m.png", arr))
    assert m.dtype == np.uint8
    assert (m[:, :16] == 0).all()
    assert (m[:, 16:32] == UNKNOWN).all()
    assert (m[:, 32:] == 1).all()


def test_mask_pre_processing_follows_image(tmp_path):
    # A mask with one column of foreground marks where the image's columns land.
    h, w = 50, 101
    img = np.zeros((h, w, 3), np.uint8)
    img[:, :, 0] = np.arange(w, dtype=np.uint8)[None]
    mask = np.where(np.arange(w)[None].repeat(h, 0) % 2 == 0, 255, 0).astype(np.uint8)
    x, y = load_pair(_save(tmp_path / "i.png", img), _save(tmp_path / "m.png", mask))
    assert y.shape == (128, 128) and y.dtype == np.uint8
    cols = np.rint((x[0, 0] + 1) / 2 * 255).astype(int)  # source column of each pixel
    assert np.array_equal(y[0], (cols % 2 == 0).astype(np.uint8))


# ---------------------------------------------------------------- resize rules

def test_resized_shape_round_half_to_even():
    assert resized_shape(4, 5, 128) == (128, 160)        # exact
    assert resized_shape(50, 101, 128) == (128, 259)     # 258.56 -> 259
    assert resized_shape(101, 50, 128) == (259, 128)     # portrait: long side is height
    assert resized_shape(128, 128, 128) == (128, 128)
    # Exact halves go to the even neighbour (Python's round), not always up:
    assert resized_shape(256, 301, 128) == (128, 150)    # 150.5 -> 150
    assert resized_shape(256, 303, 128) == (128, 152)    # 151.5 -> 152
    assert resized_shape(301, 256, 128) == (150, 128)
    assert resized_shape(2, 5, 1) == (1, 2)              # 2.5 -> 2


def test_center_crop_offset_floor():
    arr = np.arange(7 * 4).reshape(7, 4)
    out = center_crop(arr, 4)
    # (7 - 4) // 2 = 1: rows 1..4, one more row dropped at the bottom than at the top
    assert np.array_equal(out, arr[1:5])
    arr = np.arange(4 * 9).reshape(4, 9)
    assert np.array_equal(center_crop(arr, 4), arr[:, 2:6])


def test_nearest_resize_and_crop(tmp_path):
    # 64 x 130: short side x2 (NEAREST), long side round(128 * 130 / 64) = 260, crop 66.
    img = np.zeros((64, 130, 3), np.uint8)
    img[..., 1] = np.arange(130, dtype=np.uint8)[None]
    x, _ = load_pair(_save(tmp_path / "ramp.png", img))
    cols = np.rint((x[1, 0] + 1) / 2 * 255).astype(int)
    resized = np.asarray(Image.fromarray(img).resize((260, 128), Image.NEAREST))[0, :, 1]
    assert np.array_equal(cols, resized[66:66 + 128])


def test_size_none_keeps_resolution(tmp_path):
    x, _ = load_pair(_save(tmp_path / "a.png", _rgb(40, 60)), size=None)
    assert x.shape == (3, 40, 60)


# ---------------------------------------------------------------- authors' inputs

def test_matches_authors_inputs_bit_for_bit():
    if not VECTORS.is_file() or not (HORSES / "images").is_dir():
        pytest.skip("shared reference data not present")
    ref = np.load(VECTORS)
    names, xs = ref["names"], ref["x"]
    assert xs.shape == (16, 3, 128, 128)
    for name, expected in zip(names, xs):
        x, _ = load_pair(HORSES / "images" / str(name))
        assert x.dtype == expected.dtype
        assert np.array_equal(x, expected), name


def test_shared_masks_have_three_labels():
    if not (HORSES / "masks").is_dir():
        pytest.skip("shared data not present")
    first = sorted((HORSES / "masks").iterdir())[0]
    m = read_mask(first)
    assert set(np.unique(m)) <= {0, 1, UNKNOWN}
    assert (m == 1).any() and (m == 0).any()


def test_module_constants():
    assert images.UNKNOWN == 255 and images.MIN_SIDE >= 1


# ---------------------------------------------------------------- mask conventions

def test_zero_one_mask_is_foreground_where_one(tmp_path):
    arr = np.zeros((32, 48), np.uint8)
    arr[8:24, 12:36] = 1
    m = read_mask(_save(tmp_path / "01.png", arr))
    assert np.array_equal(m, arr)  # 1 stays foreground, nothing becomes unknown
    as_255 = read_mask(_save(tmp_path / "0255.png", arr * 255))
    assert np.array_equal(m, as_255)


def test_zero_one_mask_without_foreground_is_background(tmp_path):
    m = read_mask(_save(tmp_path / "empty.png", np.zeros((20, 20), np.uint8)))
    assert (m == 0).all()


@pytest.mark.parametrize("colour", [(0, 255, 0), (0, 0, 255), (255, 0, 0), (0, 200, 255)])
def test_colour_mask_is_read_by_its_brightest_channel(tmp_path, colour):
    arr = np.zeros((24, 30, 3), np.uint8)
    arr[6:18, 5:25] = colour
    m = read_mask(_save(tmp_path / "c.png", arr))
    expected = np.zeros((24, 30), np.uint8)
    expected[6:18, 5:25] = 1
    assert np.array_equal(m, expected)


def test_palette_mask_with_green_foreground(tmp_path):
    arr = np.zeros((24, 30, 3), np.uint8)
    arr[6:18, 5:25] = (0, 255, 0)
    path = tmp_path / "p.png"
    Image.fromarray(arr).convert("P", palette=Image.ADAPTIVE, colors=2).save(path)
    assert Image.open(path).mode == "P"
    assert read_mask(path)[12, 15] == 1 and read_mask(path)[0, 0] == 0


def test_grey_mask_stored_as_rgb_keeps_the_unknown_band(tmp_path):
    grey = np.zeros((20, 30), np.uint8)
    grey[:, 10:20] = 128
    grey[:, 20:] = 255
    m = read_mask(_save(tmp_path / "g.png", np.repeat(grey[..., None], 3, 2)))
    assert np.array_equal(m, read_mask(_save(tmp_path / "l.png", grey)))
    assert (m[:, 10:20] == UNKNOWN).all()


def test_mask_mixing_one_and_255_is_refused(tmp_path):
    arr = np.zeros((20, 20), np.uint8)
    arr[5:10] = 1
    arr[10:15] = 255
    with pytest.raises(ImageError, match="amb.png"):
        read_mask(_save(tmp_path / "amb.png", arr))


# ---------------------------------------------------------------- EXIF orientation

def _with_orientation(path, arr, orientation):
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    img.save(path, exif=exif.tobytes())
    return path


def test_image_is_read_in_its_displayed_orientation(tmp_path):
    arr = _rgb(30, 50)  # stored 50 wide, 30 high
    path = _with_orientation(tmp_path / "phone.jpg", arr, 6)  # shown rotated 90 degrees
    img = read_image(path)
    assert img.size == (30, 50)
    assert images.displayed_size(path) == (30, 50)
    # orientation 6: the stored image is shown turned clockwise
    expected = np.asarray(Image.open(path).convert("RGB").transpose(Image.ROTATE_270))
    assert np.array_equal(np.asarray(img), expected)
    assert read_image(path, orient=False).size == (50, 30)


def test_mask_follows_its_own_orientation_tag(tmp_path):
    arr = np.zeros((30, 50), np.uint8)
    arr[:, :10] = 255
    path = tmp_path / "m.png"
    _with_orientation(path, arr, 3)  # 180 degrees
    m = read_mask(path)
    assert m.shape == (30, 50) and (m[:, -10:] == 1).all() and (m[:, :-10] == 0).all()


def test_pair_with_mask_in_the_stored_orientation_is_refused_clearly(tmp_path):
    img = _with_orientation(tmp_path / "phone.jpg", _rgb(30, 50), 6)
    mask = _save(tmp_path / "phone.png", np.zeros((30, 50), np.uint8))
    with pytest.raises(ImageError, match="orientation"):
        load_pair(img, mask)
    ok = _save(tmp_path / "shown.png", np.zeros((50, 30), np.uint8))
    x, y = load_pair(img, ok, size=None)
    assert x.shape == (3, 50, 30) and y.shape == (50, 30)


# ---------------------------------------------------------------- very large images

def test_image_over_the_decompression_bomb_limit_is_one_image_error(tmp_path, monkeypatch):
    path = _save(tmp_path / "huge.png", _rgb(40, 60))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2400 pixels > 2 x the limit
    with pytest.raises(ImageError, match="huge.png") as err:
        read_image(path)
    assert "megapixel" in str(err.value)
    with pytest.raises(ImageError, match="huge.png"):
        images.displayed_size(path)


def test_large_legal_image_warns_in_one_line_of_ours(tmp_path, monkeypatch):
    import warnings
    path = _save(tmp_path / "big.png", _rgb(40, 60))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 2400 pixels: over, not 2x over
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_image(path).size == (60, 40)
    assert [type(w.message) for w in caught] == [images.LargeImageWarning]
    assert "big.png" in str(caught[0].message) and "\n" not in str(caught[0].message)


# ---------------------------------------------------------------- folder scans

def test_scan_reports_every_entry_it_does_not_use(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    _save(folder / "a.jpg", _rgb(20, 20))
    _save(folder / "b.gif", _rgb(20, 20))               # GIF: first frame supported
    (folder / "dangling.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "dir.jpg").mkdir()
    (folder / "nested").mkdir()
    (folder / "notes.txt").write_text("x")
    (folder / ".hidden.jpg").write_text("x")           # hidden: ignored without a word
    scan = images.scan_images(folder)
    assert [p.name for p in scan.images] == ["a.jpg", "b.gif"]
    assert sorted(p.name for p, _ in scan.bad) == ["dangling.jpg", "dir.jpg"]
    assert sorted(p.name for p, _ in scan.ignored) == ["nested", "notes.txt"]
    reasons = dict((p.name, r) for p, r in scan.bad + scan.ignored)
    assert "link" in reasons["dangling.jpg"] and "folder" in reasons["dir.jpg"]
    assert "folder" in reasons["nested"]
    assert read_image(folder / "b.gif").mode == "RGB"
    with pytest.raises(ImageError, match="dangling.jpg"):
        list_images(folder)  # a set with a broken image entry is refused, not shrunk
