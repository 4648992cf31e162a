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
