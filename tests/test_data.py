"""Datasets (iemlib.data): ReDO's Flowers-102 and CUB splits on miniature trees, the
simple layout, discovery by name, the shared real sets and the synthetic demo set."""
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.io import loadmat

from iemlib.data import (CUB200, DemoSet, Flowers102, FolderSet, LSUNCar, PairDataset,
                         available_datasets, data_root, open_dataset)
from iemlib.images import UNKNOWN, ImageError

SHARED = Path(__file__).resolve().parents[2] / "shared"
SHARED_DATA = SHARED / "data"
FLOWERS_SETID = SHARED / "reference" / "flowers102_setid.mat"
CUB_SPLIT = SHARED / "reference" / "cub_train_val_test_split.txt"


def _needs(path: Path):
    if not path.exists():
        pytest.skip(f"{path} not present")


def _check_item(x, y, size=128, labels=(0, 1)):
    assert x.shape == (3, size, size) and x.dtype == np.float32
    assert -1.0 <= x.min() and x.max() <= 1.0
    assert y.shape == (size, size) and y.dtype == np.uint8
    assert set(np.unique(y)) <= set(labels)


def _write_simple_set(folder: Path, n=3, h=40, w=56, seed=0):
    """A simple-layout set: images/<k>.png and masks/<k>.png with a 0/128/255 mask."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for k in range(n):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            folder / "images" / f"{k:03d}.png")
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4:3 * h // 4, w // 4:3 * w // 4] = 255
        mask[h // 4, :] = 128
        Image.fromarray(mask).save(folder / "masks" / f"{k:03d}.png")
    return folder


# ---------------------------------------------------------------- Flowers-102

def _flowers_tree(tmp_path) -> Path:
    _needs(FLOWERS_SETID)
    root = tmp_path / "flowers102"
    (root / "jpg").mkdir(parents=True)
    (root / "segmim").mkdir()
    shutil.copy(FLOWERS_SETID, root / "setid.mat")
    return root


# The segmim colours: one flat 32 x 32 block per colour. JPEG moves some channels by one
# even at quality 100, so these were picked to keep which test each block exercises.
SEGMIM_BLOCKS = [  # (colour, expected label)
    ((0, 0, 254), 0),        # the usual background blue: R == 0 (and G == 0, B == 254)
    ((0, 200, 100), 0),      # R == 0 alone
    ((200, 0, 100), 0),      # G == 0 alone
    ((254, 254, 254), 0),    # B == 254 alone
    ((200, 100, 253), 1),    # none of the three
    ((255, 255, 255), 1),
    ((1, 1, 1), 1),          # dark but not zero
    ((120, 40, 255), 1),     # B == 255 is not 254
]


def _conditions(colour):
    r, g, b = (int(v) for v in colour)
    return r == 0, g == 0, b == 254


def _write_flower(root: Path, flower_id: int, rows=2):
    """Image (64 x 128 at 2 rows) and a segmim made of flat colour blocks."""
    cols = len(SEGMIM_BLOCKS) // rows
    seg = np.zeros((32 * rows, 32 * cols, 3), np.uint8)
    for k, (colour, _) in enumerate(SEGMIM_BLOCKS):
        r, c = divmod(k, cols)
        seg[32 * r:32 * (r + 1), 32 * c:32 * (c + 1)] = colour
    # Lossless-looking JPEG so that the exact values 0 and 254 survive in flat regions.
    Image.fromarray(seg).save(root / "segmim" / f"segmim_{flower_id:05d}.jpg",
                              quality=100, subsampling=0)
    img = np.random.default_rng(flower_id).integers(0, 256, seg.shape, dtype=np.uint8)
    Image.fromarray(img).save(root / "jpg" / f"image_{flower_id:05d}.jpg")
    return seg


def test_flowers_splits_follow_redo(tmp_path):
    root = _flowers_tree(tmp_path)
    mat = loadmat(root / "setid.mat")
    sizes = {s: len(Flowers102(root, s)) for s in ("test", "val", "train")}
    assert sizes == {"test": 1020, "val": 1020, "train": 6149}
    test = Flowers102(root, "test")
    assert test.ids == [int(i) for i in mat["trnid"].ravel()]  # ReDO's swap
    assert Flowers102(root, "train").ids == [int(i) for i in mat["tstid"].ravel()]
    assert test.names[0] == f"image_{test.ids[0]:05d}.jpg"
    assert len(set(test.ids) | set(Flowers102(root, "val").ids)
               | set(Flowers102(root, "train").ids)) == 8189


def test_segmim_rule_exact():
    seg = np.array([[c for c, _ in SEGMIM_BLOCKS]], np.uint8)  # (1, 8, 3)
    labels = [lab for _, lab in SEGMIM_BLOCKS]
    assert Flowers102.segmim_to_mask(seg).tolist() == [labels]
    assert Flowers102.segmim_to_mask(seg).dtype == np.uint8


def test_flowers_mask_rule(tmp_path):
    root = _flowers_tree(tmp_path)
    ds = Flowers102(root, "test", size=None)  # original size: check the rule pixel by pixel
    seg = _write_flower(root, ds.ids[0])
    stored = np.asarray(Image.open(root / "segmim" / f"segmim_{ds.ids[0]:05d}.jpg"))
    x, y = ds[0]
    assert x.shape == (3,) + seg.shape[:2] and y.shape == seg.shape[:2]
    cols = len(SEGMIM_BLOCKS) // 2
    for k, (colour, label) in enumerate(SEGMIM_BLOCKS):
        r, c = divmod(k, cols)
        inner = (slice(32 * r + 8, 32 * r + 24), slice(32 * c + 8, 32 * c + 24))
        flat = np.unique(stored[inner].reshape(-1, 3), axis=0)
        assert len(flat) == 1 and _conditions(flat[0]) == _conditions(colour), \
            f"JPEG changed which test {colour} exercises; the test itself is invalid"
        assert (y[inner] == label).all(), colour
    # The static rule agrees with the loader on every pixel, block edges included.
    assert np.array_equal(y, Flowers102.segmim_to_mask(stored))


def test_flowers_load_at_128(tmp_path):
    root = _flowers_tree(tmp_path)
    ds = Flowers102(root, "test")
    for i in range(3):
        _write_flower(root, ds.ids[i])
    x, y = ds.load(indices=[0, 1, 2])
    assert x.shape == (3, 3, 128, 128) and x.dtype == torch.float32
    assert y.shape == (3, 1, 128, 128) and y.dtype == torch.uint8
    for i in range(3):
        _check_item(*ds[i])
    # 64 x 128 -> resized to 128 x 256, centre crop from column 64: the second and third
    # blocks of the top row (R == 0, G == 0: background) and of the bottom row (white and
    # (1, 1, 1): foreground).
    assert (ds[0][1][:64] == 0).all() and (ds[0][1][64:] == 1).all()


def test_flowers_missing_pieces(tmp_path):
    root = _flowers_tree(tmp_path)
    ds = Flowers102(root, "test")
    with pytest.raises(ImageError, match=f"image_{ds.ids[5]:05d}.jpg"):
        ds[5]  # listed in setid.mat but not on disk
    shutil.rmtree(root / "segmim")
    with pytest.raises(ImageError, match="segmim"):
        Flowers102(root)
    (root / "setid.mat").unlink()
    with pytest.raises(ImageError, match="setid.mat"):
        Flowers102(root)
    with pytest.raises(ImageError, match="nowhere"):
        Flowers102(tmp_path / "nowhere")
    with pytest.raises(ImageError, match="split"):
        Flowers102(root, "validation")


def test_flowers_size_mismatch(tmp_path):
    root = _flowers_tree(tmp_path)
    ds = Flowers102(root)
    _write_flower(root, ds.ids[0])
    Image.new("RGB", (50, 50)).save(root / "segmim" / f"segmim_{ds.ids[0]:05d}.jpg")
    with pytest.raises(ImageError, match=f"segmim_{ds.ids[0]:05d}.jpg"):
        ds[0]


# ---------------------------------------------------------------- CUB-200-2011

def _cub_tree(tmp_path, n_files=3) -> tuple[Path, list[int]]:
    """images.txt for all 11,788 ids (fake paths), ReDO's split file, and real files for
    the first ``n_files`` test images. Returns the root and the ids that have files."""
    _needs(CUB_SPLIT)
    root = tmp_path / "CUB_200_2011"
    (root / "images").mkdir(parents=True)
    (root / "segmentations").mkdir()
    shutil.copy(CUB_SPLIT, root / "train_val_test_split.txt")
    lines = CUB_SPLIT.read_text().split("\n")
    codes = [line.split() for line in lines if line.strip()]
    (root / "images.txt").write_text(
        "".join(f"{i} {int(i) % 200 + 1:03d}.Bird/Bird_{i}.jpg\n" for i, _ in codes))
    made = []
    for i, code in codes:
        if code != "2" or len(made) == n_files:
            continue
        rel = f"{int(i) % 200 + 1:03d}.Bird/Bird_{i}"
        (root / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "segmentations" / rel).parent.mkdir(parents=True, exist_ok=True)
        h, w = 60 + int(i) % 7, 90
        img = np.random.default_rng(int(i)).integers(0, 256, (h, w), dtype=np.uint8)
        Image.fromarray(img).save(root / "images" / f"{rel}.jpg")  # greyscale, like some CUB
        seg = np.zeros((h, w), np.uint8)
        seg[:, 30:45] = 127      # at most half the annotators: background
        seg[:, 45:60] = 128      # more than half: foreground
        seg[:, 60:] = 255
        Image.fromarray(seg).save(root / "segmentations" / f"{rel}.png")
        made.append(int(i))
    return root, made


def test_cub_split_counts(tmp_path):
    root, _ = _cub_tree(tmp_path, n_files=0)
    assert {s: len(CUB200(root, s)) for s in ("train", "val", "test")} == \
        {"train": 10000, "val": 788, "test": 1000}
    test = CUB200(root, "test")
    codes = dict(line.split() for line in CUB_SPLIT.read_text().splitlines() if line.strip())
    assert all(codes[str(i)] == "2" for i in test.ids)
    assert test.ids == sorted(test.ids)  # images.txt order
    assert test.names[0].endswith(f"Bird_{test.ids[0]}.jpg")


def test_cub_load_and_threshold(tmp_path):
    root, made = _cub_tree(tmp_path)
    ds = CUB200(root, "test", size=None)
    assert ds.ids[:len(made)] == made
    x, y = ds[0]
    assert x.shape[0] == 3  # the greyscale photograph became RGB
    assert (y[:, :45] == 0).all() and (y[:, 45:] == 1).all()
    ds = CUB200(root, "test")
    for i in range(len(made)):
        _check_item(*ds[i])
    x, y = ds.load(limit=3)
    assert x.shape == (3, 3, 128, 128) and y.shape == (3, 1, 128, 128)


def test_cub_split_file_elsewhere_and_errors(tmp_path):
    root, made = _cub_tree(tmp_path)
    moved = tmp_path / "splits" / "redo_split.txt"
    moved.parent.mkdir()
    shutil.move(root / "train_val_test_split.txt", moved)
    with pytest.raises(ImageError, match="train_val_test_split.txt"):
        CUB200(root)
    assert len(CUB200(root, split_file=moved)) == 1000
    # Segmentations unpacked beside CUB_200_2011/ (the official archives' layout).
    shutil.move(root / "segmentations", tmp_path / "segmentations")
    ds = CUB200(root, split_file=moved)
    _check_item(*ds[0])
    with pytest.raises(ImageError, match=Path(ds.names[len(made)]).name):
        ds[len(made)]
    (root / "images.txt").unlink()
    with pytest.raises(ImageError, match="images.txt"):
        CUB200(root, split_file=moved)


def test_cub_split_file_too_short(tmp_path):
    root, _ = _cub_tree(tmp_path, n_files=0)
    lines = (root / "train_val_test_split.txt").read_text().splitlines()
    (root / "train_val_test_split.txt").write_text("\n".join(lines[:-5]) + "\n")
    with pytest.raises(ImageError, match="no split for 5"):
        CUB200(root)


# ---------------------------------------------------------------- simple layout

def test_folder_set_and_lsun_car(tmp_path):
    folder = _write_simple_set(tmp_path / "lsun_car")
    for ds in (FolderSet(folder), LSUNCar(folder)):
        assert isinstance(ds, PairDataset) and len(ds) == 3
        assert ds.names == ["000.png", "001.png", "002.png"]
        x, y = ds[1]
        _check_item(x, y, labels=(0, 1, UNKNOWN))
        assert (y == UNKNOWN).any() and (y == 1).any() and (y == 0).any()
    assert "LSUNCar" in repr(LSUNCar(folder))
    (folder / "masks" / "002.png").unlink()
    with pytest.raises(ImageError, match="002.png"):
        LSUNCar(folder)
    assert FolderSet(folder, require_masks=False).load()[1] is None


def test_load_errors(tmp_path):
    ds = FolderSet(_write_simple_set(tmp_path / "s"))
    with pytest.raises(TypeError):
        ds[0:2]
    with pytest.raises(ImageError):
        ds.load(indices=[])


# ---------------------------------------------------------------- discovery

def test_data_root_env(tmp_path, monkeypatch):
    monkeypatch.setenv("IEM_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    monkeypatch.delenv("IEM_DATA_DIR")
    assert data_root() == Path("data")
    # a notebook's kernel runs in notebooks/: the project's data/ is one level up
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert data_root() == tmp_path / "data"


def test_available_and_open_by_name(tmp_path, monkeypatch):
    monkeypatch.setenv("IEM_DATA_DIR", str(tmp_path))
    assert available_datasets() == ["demo"]
    _write_simple_set(tmp_path / "lsun_car")
    _write_simple_set(tmp_path / "my_set", n=2)
    (tmp_path / "not_a_set").mkdir()
    (tmp_path / "stray.txt").write_text("x")
    flowers = _flowers_tree(tmp_path)  # tmp_path/flowers102 with setid.mat
    _write_flower(flowers, Flowers102(flowers).ids[0])  # listed only if its first pair loads
    cub_root, _ = _cub_tree(tmp_path)  # tmp_path/CUB_200_2011
    assert available_datasets() == ["cub", "demo", "flowers102", "lsun_car", "my_set"]
    assert available_datasets(tmp_path / "lsun_car") == ["demo"]

    assert isinstance(open_dataset("lsun_car"), LSUNCar)
    my = open_dataset("my_set", size=64)
    assert type(my) is FolderSet and len(my) == 2 and my[0][0].shape == (3, 64, 64)
    assert isinstance(open_dataset("flowers102"), Flowers102)
    assert len(open_dataset("flowers102", split="train")) == 6149
    cub = open_dataset("cub", split="val")
    assert isinstance(cub, CUB200) and len(cub) == 788 and cub.root == cub_root
    assert isinstance(open_dataset("demo"), DemoSet)

    with pytest.raises(ImageError) as err:
        open_dataset("imagenet")
    for name in ("cub", "demo", "flowers102", "lsun_car", "my_set"):
        assert name in str(err.value)
    with pytest.raises(ImageError, match="train"):
        open_dataset("my_set", split="train")  # a simple set has no training split
    with pytest.raises(ImageError, match="split"):
        open_dataset("cub", split="dev")


def test_cub_lowercase_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("IEM_DATA_DIR", str(tmp_path))
    root, _ = _cub_tree(tmp_path, n_files=1)
    root.rename(tmp_path / "cub")
    assert available_datasets() == ["cub", "demo"]
    assert len(open_dataset("cub")) == 1000


def test_sets_whose_first_pair_does_not_load_are_not_listed(tmp_path, monkeypatch):
    """A half-unpacked download (split file and folders, no images yet) is not present:
    listing it would send users to a set that ``iem data verify`` rejects."""
    monkeypatch.setenv("IEM_DATA_DIR", str(tmp_path))
    flowers = _flowers_tree(tmp_path)
    _write_simple_set(tmp_path / "mine", n=1)
    assert available_datasets() == ["demo", "mine"]
    _write_flower(flowers, Flowers102(flowers).ids[0])
    assert available_datasets() == ["demo", "flowers102", "mine"]


def test_non_utf8_image_list_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("IEM_DATA_DIR", str(tmp_path))
    root, _ = _cub_tree(tmp_path, n_files=1)
    (root / "images.txt").write_bytes("1 001.Bird/Ois\xe9au_1.jpg\n".encode("latin-1"))
    with pytest.raises(ImageError, match="images.txt"):
        CUB200(root)
    _write_simple_set(tmp_path / "mine", n=1)
    assert available_datasets() == ["demo", "mine"]  # no crash, the broken set left out
    with pytest.raises(ImageError, match="mine"):     # lists what is available
        open_dataset("imagenet")


def test_empty_split_is_a_clear_error(tmp_path):
    root, _ = _cub_tree(tmp_path, n_files=0)
    lines = (root / "images.txt").read_text().splitlines()
    codes = dict(line.split() for line in (root / "train_val_test_split.txt").read_text().splitlines()
                 if line.strip())
    (root / "images.txt").write_text("".join(line + "\n" for line in lines
                                             if codes[line.split()[0]] != "2"))
    with pytest.raises(ImageError, match="test split"):
        CUB200(root, "test")
    assert len(CUB200(root, "val")) == 788


def test_paper_sets_keep_the_stored_orientation(tmp_path):
    """The official ground truth was drawn on the stored pixels, which is what the
    authors' code reads: an orientation tag on a photograph must not turn it."""
    root = _flowers_tree(tmp_path)
    ds = Flowers102(root, "test", size=None)
    _write_flower(root, ds.ids[0])
    photo = root / "jpg" / f"image_{ds.ids[0]:05d}.jpg"
    img = Image.open(photo)
    exif = img.getexif()
    exif[0x0112] = 6
    img.save(photo, exif=exif.tobytes(), quality=95)
    x, y = ds[0]
    assert x.shape[1:] == y.shape == (64, 128)


def test_folder_set_with_a_dangling_image_link_is_refused(tmp_path):
    folder = _write_simple_set(tmp_path / "s", n=2)
    (folder / "images" / "zzz.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(ImageError, match="zzz.png"):
        FolderSet(folder)


def test_open_by_path(tmp_path, monkeypatch):
    monkeypatch.setenv("IEM_DATA_DIR", str(tmp_path / "empty_root"))
    folder = _write_simple_set(tmp_path / "elsewhere" / "pairs")
    ds = open_dataset(folder)
    assert type(ds) is FolderSet and len(ds) == 3
    assert len(open_dataset(str(folder))) == 3
    flowers = _flowers_tree(tmp_path / "elsewhere")
    assert isinstance(open_dataset(flowers), Flowers102)
    (tmp_path / "elsewhere" / "plain").mkdir()
    with pytest.raises(ImageError, match="plain"):
        open_dataset(tmp_path / "elsewhere" / "plain")
    with pytest.raises(ImageError, match="demo"):
        open_dataset(tmp_path / "does_not_exist")


# ---------------------------------------------------------------- shared real sets

@pytest.mark.parametrize("name, count", [("weizmann_horse", 327), ("grabcut", 50)])
def test_shared_sets(name, count, monkeypatch):
    _needs(SHARED_DATA / name)
    monkeypatch.setenv("IEM_DATA_DIR", str(SHARED_DATA))
    assert name in available_datasets()
    ds = open_dataset(name)
    assert type(ds) is FolderSet and len(ds) == count
    x, y = ds.load(limit=4)
    assert x.shape == (4, 3, 128, 128) and y.shape == (4, 1, 128, 128)
    assert set(torch.unique(y).tolist()) <= {0, 1, UNKNOWN}
    assert len(open_dataset(SHARED_DATA / name)) == count


def test_shared_grabcut_has_unknown_band():
    _needs(SHARED_DATA / "grabcut")
    _, y = FolderSet(SHARED_DATA / "grabcut").load(limit=5)
    assert (y == UNKNOWN).any()


# ---------------------------------------------------------------- demo set

def test_demo_shapes_and_masks():
    import skimage.io  # noqa: F401  one-off library import (about 1 s), not the set's cost

    t0 = time.perf_counter()
    ds = DemoSet()
    x, y = ds.load()
    assert time.perf_counter() - t0 < 2.0
    assert len(ds) == 12 and ds.names[0] == "demo_000" and ds.names[-1] == "demo_011"
    assert x.shape == (12, 3, 128, 128) and x.dtype == torch.float32
    assert y.shape == (12, 1, 128, 128) and y.dtype == torch.uint8
    assert x.min() >= -1 and x.max() <= 1
    assert set(torch.unique(y).tolist()) == {0, 1}
    fractions = y.float().mean(dim=(1, 2, 3))
    assert (fractions > 0.05).all() and (fractions < 0.80).all()
    shapes = {s for _, _, s in ds.sources}
    assert shapes == {"horse", "blobs"}
    assert all(fg != bg for fg, bg, _ in ds.sources)


def test_demo_deterministic():
    a, b, c = DemoSet(seed=0), DemoSet(seed=0), DemoSet(seed=1)
    xa, ya = a.load()
    xb, yb = b.load()
    xc, yc = c.load()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert not torch.equal(xa, xc) and not torch.equal(ya, yc)
    # Items are made on demand and do not depend on access order or on n.
    x5, y5 = DemoSet(n=30, seed=0)[5]
    assert np.array_equal(x5, xa[5].numpy()) and np.array_equal(y5, ya[5, 0].numpy())
    assert np.array_equal(a[-1][0], a[11][0])
    with pytest.raises(IndexError):
        a[12]


def test_demo_other_size():
    x, y = DemoSet(n=2, size=64, seed=3)[1]
    _check_item(x, y, size=64)
