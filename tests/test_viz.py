"""The explorer of :mod:`iemlib.viz` without a browser, its ipywidgets front end, and the
overview figure.

The explorer's state changes (``set``, ``add_image``) and views (``state``, ``figure``) are
plain Python, so they are tested directly; the widget test builds the real ipywidgets box,
changes each control's value as a user would and checks that every change redraws.
"""
from __future__ import annotations

import datetime
import io

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from iemlib.data import DemoSet  # noqa: E402
from iemlib.iem import IEMConfig, segment  # noqa: E402
from iemlib.inpainters import GaussianInpainter, inpaint_regions  # noqa: E402
from iemlib.kernels import centred_square  # noqa: E402
from iemlib.metrics import evaluate  # noqa: E402
from iemlib.objective import inpainting_error  # noqa: E402
from iemlib.viz import IEMExplorer, overview_figure, save_overview  # noqa: E402

ITERS = 20
DEFAULTS = dict(sigma=5.0, lam=0.001, init_size=78, smoothing=True, boundary_only=True,
                regulariser=True)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One image at a time: extra threads only add synchronisation, and on a busy machine
    they turn a 0.1 s run into seconds. Restored after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images():
    """Two demo images with exact ground truth: name -> (x (3, 128, 128), y (128, 128) uint8)."""
    ds = DemoSet(n=2)
    return {ds.names[i]: ds[i] for i in range(len(ds))}


@pytest.fixture
def explorer(images):
    return IEMExplorer(images, iters=ITERS)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close("all")


def png_bytes(h=96, w=160, seed=0) -> bytes:
    """A real PNG file, made in memory."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def expected_config(settings: dict, iters: int) -> IEMConfig:
    """The configuration the explorer's settings stand for."""
    s = {**DEFAULTS, **settings}
    return IEMConfig(iters=iters, sigma=s["sigma"], lam=s["lam"] if s["regulariser"] else 0.0,
                     init_sizes=(s["init_size"],), smoothing=s["smoothing"],
                     boundary_only=s["boundary_only"], device="cpu")


# ---------------------------------------------------------------------------- defaults
def test_defaults(explorer, images):
    assert explorer.name == next(iter(images))
    assert explorer.iters == ITERS
    assert explorer.iteration == ITERS
    assert explorer.settings == DEFAULTS
    assert explorer.message == ""
    cfg = explorer.config()
    paper = IEMConfig()
    assert (cfg.sigma, cfg.lam, cfg.init_sizes, cfg.smoothing, cfg.boundary_only) == (
        paper.sigma, paper.lam, paper.init_sizes, paper.smoothing, paper.boundary_only)
    assert cfg.iters == ITERS and cfg.history and cfg.keep_masks


def test_needs_an_image():
    with pytest.raises(ValueError, match="at least one image"):
        IEMExplorer({})


def test_state_shapes(explorer):
    s = explorer.state()
    assert s["t"] == ITERS
    assert s["image"].shape == (3, 128, 128)
    assert s["mask"].shape == (1, 128, 128) and s["mask"].dtype == torch.bool
    for key in ("pred_foreground", "pred_background", "composite"):
        assert s[key].shape == (3, 128, 128), key
    for key in ("inpainting_error", "objective", "iou"):
        assert s[key].shape == (ITERS + 1,), key
    assert 0 <= s["settled_at"] <= ITERS and s["period"] in (0, 1, 2)
    m = s["mask"].to(s["image"].dtype)
    torch.testing.assert_close(s["composite"], m * s["pred_foreground"] + (1 - m) * s["pred_background"])


# ------------------------------------------------------------ set(): each setting's effect
SETTINGS = [{}, {"init_size": 44}, {"init_size": 92}, {"sigma": 3.0}, {"lam": 0.0},
            {"lam": 0.01}, {"smoothing": False}, {"boundary_only": False}, {"regulariser": False}]


@pytest.mark.parametrize("settings", SETTINGS, ids=lambda s: ",".join(f"{k}={v}" for k, v in s.items()) or "defaults")
def test_mask_at_t_is_segment_with_t_iterations(explorer, images, settings):
    explorer.set(**settings)
    assert explorer.config() == expected_config(settings, ITERS).replace(history=True, keep_masks=True)
    x = torch.as_tensor(images[explorer.name][0])[None]
    for t in (0, 1, 7, ITERS):
        explorer.set(iteration=t)
        s = explorer.state()
        assert s["t"] == t
        reference = segment(x, expected_config(settings, t)).masks[0]
        assert torch.equal(s["mask"], reference), f"mask at t={t} differs from segment(iters={t})"


def test_curves_are_the_objective_of_each_mask(explorer, images):
    explorer.set(iteration=5)
    s = explorer.state()
    x = torch.as_tensor(images[explorer.name][0])[None]
    m = s["mask"][None].float()
    pf, pb, _ = inpaint_regions(x, m, GaussianInpainter())
    assert float(s["inpainting_error"][5]) == pytest.approx(float(inpainting_error(x, m, pf, pb)[0]), abs=1e-5)
    torch.testing.assert_close(s["pred_foreground"], pf[0])
    torch.testing.assert_close(s["pred_background"], pb[0])


@pytest.mark.parametrize("off", [{"lam": 0.0}, {"regulariser": False}])
def test_without_regulariser_objective_is_inpainting_error(explorer, off):
    explorer.set(**off)
    assert explorer.config().lam == 0.0
    s = explorer.state()
    torch.testing.assert_close(s["objective"], s["inpainting_error"], rtol=0, atol=0)


def test_regulariser_lowers_the_objective(explorer):
    s = explorer.state()
    assert bool((s["objective"] < s["inpainting_error"]).all())
    explorer.set(regulariser=False)
    assert explorer.settings["lam"] == 0.001, "the switch keeps lambda for when it is turned back on"
    assert not torch.equal(explorer.state()["objective"], s["objective"])


@pytest.mark.parametrize("size", [44, 78, 92, 30])
def test_init_size_sets_the_square_at_t0(explorer, size):
    explorer.set(init_size=size, iteration=0)
    s = explorer.state()
    assert torch.equal(s["mask"], centred_square(1, 128, 128, size)[0])
    assert int(s["mask"].sum()) == size * size


def test_sigma_changes_the_inpainter(explorer):
    explorer.set(iteration=0)
    before = explorer.state()
    explorer.set(sigma=2.0)
    after = explorer.state()
    assert torch.equal(before["mask"], after["mask"])          # same square at t = 0
    assert not torch.allclose(before["pred_foreground"], after["pred_foreground"])
    x = after["image"][None]
    m = after["mask"][None].float()
    pf, _, _ = inpaint_regions(x, m, GaussianInpainter(sigma=2.0))
    torch.testing.assert_close(after["pred_foreground"], pf[0])


@pytest.mark.parametrize("asked, got", [(-5, 0), (0, 0), (3, 3), (ITERS, ITERS), (10_000, ITERS)])
def test_iteration_clamps(explorer, asked, got):
    explorer.set(iteration=asked)
    assert explorer.iteration == got
    assert explorer.state()["t"] == got


def test_unknown_setting_raises_and_changes_nothing(explorer):
    with pytest.raises(ValueError, match="colour"):
        explorer.set(sigma=3.0, colour="red")
    assert explorer.settings == DEFAULTS


def test_unknown_image_raises_and_changes_nothing(explorer, images):
    with pytest.raises(ValueError, match="nope.png"):
        explorer.set(name="nope.png", sigma=3.0)
    assert explorer.name == next(iter(images))
    assert explorer.settings["sigma"] == 5.0


def test_switching_image(explorer, images):
    second = list(images)[1]
    explorer.set(name=second)
    s = explorer.state()
    assert explorer.name == second
    torch.testing.assert_close(s["image"], torch.as_tensor(images[second][0]))


def test_runs_are_cached_per_image_and_settings(explorer):
    first = explorer.run()
    explorer.set(iteration=3)                     # moving in time does not rerun IEM
    assert explorer.run() is first
    explorer.set(init_size=44)
    assert explorer.run() is not first
    explorer.set(init_size=78)
    assert explorer.run() is first


# ------------------------------------------------------------------- ground truth and IoU
def test_iou_curve_with_ground_truth(explorer, images):
    s = explorer.state()
    y = torch.as_tensor(images[explorer.name][1])[None, None]
    masks = explorer.run().history["masks"][0, 0]
    expected = evaluate(masks, y.expand(len(masks), -1, -1, -1)).iou
    np.testing.assert_allclose(s["iou"].numpy(), expected)
    assert bool(((s["iou"] >= 0) & (s["iou"] <= 1)).all())


def test_no_iou_curve_without_ground_truth(images):
    x, _ = next(iter(images.values()))
    explorer = IEMExplorer({"no truth": (x, None)}, iters=5)
    assert explorer.state()["iou"] is None
    assert explorer.figure() is not None


# ---------------------------------------------------------------------------- add_image
def test_add_image_png(explorer):
    assert explorer.add_image("mine.png", png_bytes()) is True
    assert explorer.name == "mine.png"
    assert "mine.png" in explorer.message
    x, y = explorer.images["mine.png"]
    assert x.shape == (3, 128, 128) and y is None             # resized and centre-cropped
    assert -1 <= float(x.min()) and float(x.max()) <= 1
    s = explorer.state()
    assert s["iou"] is None and s["mask"].shape == (1, 128, 128)


def test_add_image_jpeg_without_suffix(explorer):
    buf = io.BytesIO()
    Image.fromarray(np.full((40, 50, 3), 120, np.uint8)).save(buf, format="JPEG")
    assert explorer.add_image("photo", buf.getvalue()) is True
    assert explorer.name == "photo"


@pytest.mark.parametrize("data", [b"certainly not an image", b"", png_bytes(8, 8)],
                         ids=["garbage", "empty", "too small"])
def test_add_image_refuses_bad_bytes(explorer, images, data):
    assert explorer.add_image("junk.png", data) is False
    assert explorer.message.startswith("junk.png: ")
    assert "upload" not in explorer.message                   # no temporary path leaks out
    assert explorer.name == next(iter(images))
    assert "junk.png" not in explorer.images


# ------------------------------------------------------------------------------- figures
def test_figure(explorer):
    from matplotlib.figure import Figure
    fig = explorer.figure()
    assert isinstance(fig, Figure)
    assert len(fig.axes) >= 5
    assert any(explorer.name in ax.get_title() for ax in fig.axes)


def test_overview_figure(images):
    from matplotlib.figure import Figure
    x = torch.stack([torch.as_tensor(v[0]) for v in images.values()])
    y = torch.stack([torch.as_tensor(v[1]) for v in images.values()])[:, None]
    masks = segment(x, IEMConfig(iters=3, device="cpu")).masks
    for kwargs, cols in (({"y": y}, 3), ({"y": None}, 2), ({"y": y, "inpaint": x}, 4)):
        fig = overview_figure(x, masks=masks, title="t", **kwargs)
        assert isinstance(fig, Figure)
        assert len(fig.axes) == len(x) * cols


def test_save_overview_writes_a_png(images, tmp_path):
    x = torch.stack([torch.as_tensor(v[0]) for v in images.values()])
    y = torch.stack([torch.as_tensor(v[1]) for v in images.values()])[:, None]
    masks = y == 1
    path = save_overview(tmp_path / "figures" / "overview.png", x, y, masks, title="demo")
    assert path == tmp_path / "figures" / "overview.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as img:
        assert img.size[0] > 100 and img.size[1] > 100
    assert [p.name for p in path.parent.iterdir()] == ["overview.png"]   # no temporary file left


# -------------------------------------------------------------------------------- widget
def walk(widget):
    """Every widget inside a box, depth first."""
    yield widget
    for child in getattr(widget, "children", ()):
        yield from walk(child)


def controls(box) -> dict:
    """The explorer's controls by type and description."""
    found = {}
    for wd in walk(box):
        name = type(wd).__name__
        found[f"{name}:{getattr(wd, 'description', '')}"] = wd
    return found


def upload_value(name: str, data: bytes):
    """What ipywidgets 8 stores in FileUpload.value after a browser upload."""
    return ({"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
             "last_modified": datetime.datetime.now(datetime.timezone.utc)},)


@pytest.fixture
def counted(explorer):
    """The explorer with figure() counting its calls (each redraw calls it once)."""
    pytest.importorskip("ipywidgets")
    calls = []
    draw = explorer.figure

    def figure():
        calls.append(explorer.state()["t"])
        return draw()

    explorer.figure = figure
    return explorer, calls


def test_widget_builds_and_draws_once(counted):
    import ipywidgets as w
    explorer, calls = counted
    box = explorer.widget()
    assert isinstance(box, w.VBox)
    assert len(calls) == 1                                     # drawn at creation
    c = controls(box)
    for key in ("Dropdown:image", "FileUpload:your image", "FloatSlider:sigma", "SelectionSlider:lambda",
                "IntSlider:square", "IntSlider:iteration", "Checkbox:smoothing",
                "Checkbox:boundary only", "Checkbox:regulariser", "Output:"):
        assert key in c, key
    assert c["IntSlider:iteration"].max == ITERS


@pytest.mark.parametrize("key, value, check", [
    ("FloatSlider:sigma", 3.0, lambda e: e.settings["sigma"] == 3.0),
    ("SelectionSlider:lambda", 0.0, lambda e: e.settings["lam"] == 0.0 and e.config().lam == 0.0),
    ("IntSlider:square", 44, lambda e: e.settings["init_size"] == 44),
    ("IntSlider:iteration", 4, lambda e: e.iteration == 4 and e.state()["t"] == 4),
    ("Checkbox:smoothing", False, lambda e: e.settings["smoothing"] is False),
    ("Checkbox:boundary only", False, lambda e: e.settings["boundary_only"] is False),
    ("Checkbox:regulariser", False, lambda e: e.config().lam == 0.0),
    ("Dropdown:image", "demo_001", lambda e: e.name == "demo_001"),
])
def test_widget_control_redraws(counted, key, value, check):
    explorer, calls = counted
    box = explorer.widget()
    controls(box)[key].value = value
    assert len(calls) == 2, "changing a control redraws once"
    assert check(explorer)


def test_widget_upload(counted):
    explorer, calls = counted
    box = explorer.widget()
    c = controls(box)
    c["FileUpload:your image"].value = upload_value("mine.png", png_bytes())
    assert "mine.png" in explorer.images
    assert "mine.png" in c["Dropdown:image"].options
    assert explorer.name == "mine.png" and c["Dropdown:image"].value == "mine.png"
    assert c["HTML:"].value == explorer.message == "added mine.png"


def test_widget_upload_of_garbage_reports_the_file(counted, images):
    explorer, calls = counted
    box = explorer.widget()
    c = controls(box)
    c["FileUpload:your image"].value = upload_value("junk.png", b"not an image")
    assert "junk.png" not in explorer.images
    assert explorer.name == next(iter(images))
    assert c["HTML:"].value.startswith("junk.png: ")


def test_widget_upload_while_another_image_is_shown(counted, images):
    explorer, calls = counted
    box = explorer.widget()
    c = controls(box)
    c["Dropdown:image"].value = list(images)[1]
    c["FileUpload:your image"].value = upload_value("mine.png", png_bytes())
    assert explorer.name == "mine.png"


def test_widget_starts_from_current_settings(counted):
    explorer, calls = counted
    explorer.set(smoothing=False, boundary_only=False, regulariser=False)
    explorer.widget()
    assert explorer.settings["smoothing"] is False
    assert explorer.settings["boundary_only"] is False
    assert explorer.settings["regulariser"] is False


def test_widget_accepts_any_lambda(counted):
    explorer, calls = counted
    explorer.set(lam=0.002)
    explorer.widget()
    assert explorer.settings["lam"] == 0.002


def test_add_image_again_under_the_same_name_reruns(explorer):
    explorer.add_image("mine.png", png_bytes(seed=0))
    first = explorer.state()
    explorer.add_image("mine.png", png_bytes(seed=1))
    second = explorer.state()
    assert not torch.equal(first["image"], second["image"])
    assert not torch.equal(first["inpainting_error"], second["inpainting_error"])


def test_overview_title_fits_inside_the_figure(images):
    """The demo's long title (metrics included) must not be cut at either edge."""
    x = torch.stack([torch.as_tensor(v[0]) for v in images.values()])
    y = torch.stack([torch.as_tensor(v[1]) for v in images.values()])[:, None]
    title = ("IEM on the composite demo set: accuracy 71.3, IoU 46.7, DICE 60.2 "
             "(12 images, flip convention per image, unknown pixels excluded)")
    for cols_y in (y, None):
        fig = overview_figure(x, cols_y, y == 1, title=title)
        fig.canvas.draw()
        box = fig._suptitle.get_window_extent()
        assert box.x0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1, (box, fig.bbox)
        top_axes = max(ax.get_window_extent().y1 for ax in fig.axes)
        assert box.y0 >= top_axes - 1, "the title overlaps the panels"


# ------------------------------------------------------------------ readable figures
def _styled():
    """A context with the series' figure style."""
    import matplotlib.pyplot as plt
    from iemlib.viz import SERIES_STYLE
    return plt.rc_context(SERIES_STYLE)


def test_a_labelled_figure_with_a_colour_bar_has_no_problems():
    import matplotlib.pyplot as plt
    from iemlib.viz import figure_problems
    with _styled():
        fig, axes = plt.subplots(1, 3, figsize=(10, 3), layout="constrained")
        axes[0].plot([0, 1], [1, 0])
        axes[0].set_xlabel("iteration")
        axes[0].set_ylabel("L_inp")
        im = axes[1].imshow(np.random.default_rng(0).random((8, 8)), cmap="magma")
        axes[1].set_xlabel("column")
        axes[1].set_ylabel("row")
        fig.colorbar(im, ax=axes[1], label="weight")
        axes[2].imshow(np.eye(8), cmap="gray", vmin=0, vmax=1)    # a mask: two levels
        axes[2].set_axis_off()
        assert figure_problems(fig) == []
        plt.close(fig)


@pytest.mark.parametrize("spoil, says", [
    (lambda fig, ax: ax.set_title("tiny", fontsize=7), "at 7 pt, below 9"),
    (lambda fig, ax: ax.set_ylabel(""), "the y axis has tick labels but no label"),
    (lambda fig, ax: fig.set_dpi(80), "stored at 80 dpi"),
    (lambda fig, ax: ax.imshow(np.random.default_rng(0).random((8, 8))), "has no colour bar"),
    (lambda fig, ax: fig.axes[1].set_title("a title far too long for its narrow panel " * 3),
     "overlap"),
])
def test_figure_problems_finds_each_kind_of_problem(spoil, says):
    import matplotlib.pyplot as plt
    from iemlib.viz import figure_problems
    with _styled():
        fig, axes = plt.subplots(1, 2, figsize=(6, 2.5))
        for ax in axes:
            ax.plot([0, 1], [0, 1])
            ax.set_xlabel("x")
            ax.set_ylabel("y")
            ax.set_title("ok")
        spoil(fig, axes[0])
        problems = figure_problems(fig)
        plt.close(fig)
    assert any(says in p for p in problems), problems


def test_the_overview_figure_is_readable(images):
    import matplotlib.pyplot as plt
    from iemlib.viz import figure_problems
    x = torch.stack([torch.as_tensor(v[0]) for v in images.values()])
    y = torch.stack([torch.as_tensor(v[1]) for v in images.values()])[:, None]
    with _styled():
        fig = overview_figure(x, y, y == 1, title="IEM on the demo set", inpaint=x)
        assert figure_problems(fig) == []
        plt.close(fig)


def test_show_jpeg_stores_at_100_dpi_or_more(monkeypatch):
    import io
    import matplotlib.pyplot as plt
    from IPython.display import Image as IPImage
    from iemlib import viz
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    fig = plt.figure(figsize=(4, 2), dpi=50)
    fig.add_axes((0, 0, 1, 1)).imshow(np.zeros((4, 4, 3)), aspect="auto")   # fills the figure
    viz.show_jpeg(fig)
    assert len(shown) == 1 and isinstance(shown[0], IPImage)
    with Image.open(io.BytesIO(shown[0].data)) as img:
        assert img.format == "JPEG"
        assert img.size[0] >= 0.9 * 4 * viz.MIN_DPI        # 4 inches at >= 100 dpi (tight box)
    assert not plt.fignum_exists(fig.number)               # closed after showing
