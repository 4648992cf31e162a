"""Figures for the notebooks and the command line.

Images are (N, 3, H, W) in [-1, 1]; masks (N, 1, H, W) bool or 0/1; ground truth uint8
0 / 1 / 255 (unknown, drawn grey)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path


def to_rgb(x) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> (H, W, 3) in [0, 1] for imshow."""
    x = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.clip((x.transpose(1, 2, 0) + 1) / 2, 0, 1)


def mask_image(m) -> np.ndarray:
    """(1, H, W) or (H, W) mask / ground truth -> (H, W) float with unknown at 0.5."""
    m = m.detach().cpu().numpy() if isinstance(m, torch.Tensor) else np.asarray(m)
    m = m.reshape(m.shape[-2:]).astype(np.float32)
    m[m == 255] = 0.5
    return m


# ------------------------------------------------------------------ the series' style
#: Smallest font size, in points, of any text in a stored figure, and the smallest
#: resolution it is stored at: 9 pt at 100 dpi is 12.5 pixels, readable on a laptop and
#: in a repository browser, which shows the stored image at its own size.
MIN_FONT_PT = 9
MIN_DPI = 100

SERIES_STYLE = {
    "figure.dpi": MIN_DPI, "savefig.dpi": MIN_DPI,
    "font.size": 10, "axes.titlesize": 10, "axes.labelsize": 10, "figure.titlesize": 11,
    "xtick.labelsize": MIN_FONT_PT, "ytick.labelsize": MIN_FONT_PT,
    "legend.fontsize": MIN_FONT_PT, "legend.title_fontsize": MIN_FONT_PT,
}


def use_series_style() -> None:
    """Set :data:`SERIES_STYLE` in matplotlib's rcParams (every notebook calls this once,
    through :func:`iemlib.series.setup`)."""
    import matplotlib.pyplot as plt   # activates the notebook backend before the update
    plt.rcParams.update(SERIES_STYLE)


def show_jpeg(fig, quality: int = 85) -> None:
    """Display a figure of photographs as a JPEG (far smaller than a PNG in a stored
    notebook) at :data:`MIN_DPI` or more, then close it."""
    import io

    import matplotlib.pyplot as plt
    from IPython.display import Image, display
    buf = io.BytesIO()
    fig.savefig(buf, format="jpeg", bbox_inches="tight", dpi=max(MIN_DPI, fig.dpi),
                pil_kwargs={"quality": quality})
    plt.close(fig)
    display(Image(data=buf.getvalue(), format="jpeg"))


def _texts(fig):
    """Every visible, non-empty text of a drawn figure (tick labels included)."""
    from matplotlib.text import Text
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def _ticks_shown(axis) -> bool:
    return any(t.get_visible() and t.get_text().strip() for t in axis.get_ticklabels())


def figure_problems(fig, min_pt: float = MIN_FONT_PT, min_dpi: float = MIN_DPI) -> list[str]:
    """What makes a figure hard to read, one line per problem ([] if none):

    * text smaller than ``min_pt`` points, or a figure stored below ``min_dpi``;
    * an axis that shows tick labels but has no label (a colour bar counts as an axis);
    * a 2-D image whose colours encode values (any colour map other than a grey map
      showing at most three levels, as masks do) without a colour bar;
    * two texts of different axes that overlap, e.g. a long title running into the
      next panel."""
    from matplotlib.image import AxesImage
    fig.canvas.draw()
    problems = []
    if fig.dpi < min_dpi:
        problems.append(f"stored at {fig.dpi:g} dpi, below {min_dpi:g}")
    texts = _texts(fig)
    for t in texts:
        if t.get_fontsize() < min_pt:
            problems.append(f"text {t.get_text()[:40]!r} at {t.get_fontsize():g} pt, below {min_pt:g}")
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison:
            continue
        name = ax.get_title() or ax.get_label() or "an axes"
        for axis, label in ((ax.xaxis, ax.get_xlabel()), (ax.yaxis, ax.get_ylabel())):
            if _ticks_shown(axis) and not label.strip():
                which = "x" if axis is ax.xaxis else "y"
                problems.append(f"{name[:40]!r}: the {which} axis has tick labels but no label")
        for im in ax.get_images():
            if not isinstance(im, AxesImage) or im.get_array() is None or im.get_array().ndim != 2:
                continue
            cmap = im.get_cmap().name
            levels = np.unique(np.ma.compressed(im.get_array()))
            categorical = cmap in ("gray", "Greys", "binary", "gray_r", "Greys_r") and len(levels) <= 3
            if not categorical and im.colorbar is None:
                problems.append(f"{name[:40]!r}: an image in colour map {cmap!r} has no colour bar")
    boxes = [(t, t.get_window_extent(), getattr(t, "axes", None)) for t in texts]
    for i, (t1, b1, a1) in enumerate(boxes):
        for t2, b2, a2 in boxes[i + 1:]:
            if a1 is not a2 and a1 is not None and a2 is not None and b1.overlaps(b2):
                problems.append(f"texts {t1.get_text()[:30]!r} and {t2.get_text()[:30]!r} overlap")
    # a text running into another panel (twin axes share their panel and are skipped)
    panels = [(ax, ax.get_window_extent()) for ax in fig.axes if ax.get_visible()]
    for t, box, owner in boxes:
        for ax, panel in panels:
            if ax is owner or owner is None or ax.get_position().bounds == owner.get_position().bounds:
                continue
            if box.overlaps(panel):
                problems.append(f"text {t.get_text()[:30]!r} runs into the panel {ax.get_title()[:30]!r}")
    return problems


def overview_figure(x, y, masks, title: str | None = None, n: int | None = None, inpaint=None):
    """A grid, one row per image: image | ground truth | IEM mask | (inpainting).

    inpaint: optional (N, 3, H, W) composite of the two inpaintings (paper Figures 4-6)."""
    import matplotlib.pyplot as plt

    n = min(len(x), n or 8)
    cols = 3 + (inpaint is not None) - (y is None)
    # constrained layout reserves room for the suptitle (tight_layout ignores it)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n), squeeze=False,
                             layout="constrained")
    heads = ["image"] + (["ground truth"] if y is not None else []) + ["IEM mask"] + (
        ["inpainting"] if inpaint is not None else [])
    for i in range(n):
        panels = [to_rgb(x[i])] + ([mask_image(y[i])] if y is not None else []) + [
            mask_image(masks[i])] + ([to_rgb(inpaint[i])] if inpaint is not None else [])
        for j, (ax, p) in enumerate(zip(axes[i], panels)):
            ax.imshow(p, cmap="gray" if p.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(heads[j], fontsize=9)
    if title:
        fig.suptitle(wrap_to_width(title, fig.get_figwidth(), 9), fontsize=9)
    return fig


def wrap_to_width(text: str, width_in: float, fontsize: float) -> str:
    """``text`` broken into lines that fit ``width_in`` inches at ``fontsize`` points
    (an average glyph is about 0.6 em wide; a margin is kept)."""
    import textwrap

    chars = max(10, int(0.9 * width_in * 72 / (0.6 * fontsize)))
    return textwrap.fill(text, chars)


def save_figure(fig, path) -> Path:
    """Save atomically (temporary file + rename) and close the figure."""
    import matplotlib.pyplot as plt
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110)
    finally:
        plt.close(fig)
    return Path(path)


def save_overview(path, x, y, masks, title: str | None = None, n: int | None = None) -> Path:
    """:func:`overview_figure` written to ``path``."""
    import matplotlib
    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    return save_figure(overview_figure(x, y, masks, title, n), path)


# ----------------------------------------------------------------------------- explorer
class IEMExplorer:
    """Interactive view of IEM on one image: the mask, both inpaintings and the curves at
    any iteration, for any sigma, lambda, initial square and switches.

    The logic is plain Python (tested without a browser); :meth:`widget` wraps it in
    ipywidgets for JupyterLab.

    images: dict name -> (x (3, H, W) in [-1, 1], y (H, W) uint8 0/1/255 or None)."""

    def __init__(self, images: dict, iters: int = 150):
        if not images:
            raise ValueError("the explorer needs at least one image")
        self.images = dict(images)
        self.name = next(iter(self.images))
        self.iters = iters
        self.settings = dict(sigma=5.0, lam=0.001, init_size=78, smoothing=True,
                             boundary_only=True, regulariser=True)
        self.iteration = iters
        self.message = ""
        self._cache: dict = {}

    # ---- state changes (what the widgets call)
    def set(self, **changes) -> None:
        unknown = set(changes) - set(self.settings) - {"name", "iteration"}
        if unknown:
            raise ValueError(f"unknown explorer settings: {sorted(unknown)}")
        if "name" in changes:
            if changes["name"] not in self.images:
                raise ValueError(f"no image called {changes['name']!r}")
            self.name = changes.pop("name")
        if "iteration" in changes:
            self.iteration = int(min(max(changes.pop("iteration"), 0), self.iters))
        self.settings.update(changes)

    def add_image(self, name: str, data: bytes) -> bool:
        """Add an uploaded image (file bytes); returns False and sets ``message`` if the
        bytes are not a usable image."""
        import io
        import tempfile

        from .images import ImageError, image_to_array, read_image
        suffix = Path(name).suffix or ".png"
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data if isinstance(data, (bytes, bytearray)) else io.BytesIO(data).read())
            try:
                x = image_to_array(read_image(path))
            except ImageError as err:
                self.message = f"{name}: {str(err).split(': ', 1)[-1]}"
                return False
        self.images[name] = (x, None)
        # a new picture under an old name must not reuse the old picture's runs
        self._cache = {k: v for k, v in self._cache.items() if k[0] != name}
        self.name = name
        self.message = f"added {name}"
        return True

    # ---- computation
    def config(self):
        from .iem import IEMConfig
        s = self.settings
        return IEMConfig(iters=self.iters, sigma=float(s["sigma"]),
                         lam=float(s["lam"]) if s["regulariser"] else 0.0,
                         init_sizes=(int(s["init_size"]),), smoothing=bool(s["smoothing"]),
                         boundary_only=bool(s["boundary_only"]), history=True, keep_masks=True,
                         device="cpu")

    def run(self):
        """The IEM run for the current image and settings (cached): an IEMResult."""
        from .iem import segment
        key = (self.name, tuple(sorted(self.settings.items())), self.iters)
        if key not in self._cache:
            x, _ = self.images[self.name]
            self._cache[key] = segment(torch.as_tensor(x)[None], self.config())
        return self._cache[key]

    def state(self) -> dict:
        """Everything the view shows at the current iteration t:
        image, mask, pred_foreground, pred_background, composite ((3 or 1, H, W) tensors),
        inpainting_error and objective curves (T + 1,), iou curve (T + 1,) or None,
        and t."""
        from .inpainters import GaussianInpainter, inpaint_regions
        from .metrics import evaluate
        res = self.run()
        x, y = self.images[self.name]
        x = torch.as_tensor(x)
        masks = res.history["masks"][0, 0]                    # (T + 1, 1, H, W)
        t = self.iteration
        m = masks[t]
        pf, pb, comp = inpaint_regions(x[None], m[None], GaussianInpainter(sigma=float(self.settings["sigma"])))
        iou = None
        if y is not None:
            yy = torch.as_tensor(y).expand(len(masks), *y.shape[-2:])[:, None]
            iou = torch.as_tensor(evaluate(masks, yy).iou)
        return dict(t=t, image=x, mask=m, pred_foreground=pf[0], pred_background=pb[0],
                    composite=comp[0], inpainting_error=res.history["inpainting_error"][0, 0],
                    objective=res.history["objective"][0, 0], iou=iou,
                    settled_at=int(res.settled_at[0, 0]), period=int(res.period[0, 0]))

    def figure(self):
        """A matplotlib figure of :meth:`state`."""
        import matplotlib.pyplot as plt
        s = self.state()
        fig = plt.figure(figsize=(11, 4.2))
        grid = fig.add_gridspec(2, 5)
        panels = [("image", to_rgb(s["image"])), (f"mask, iteration {s['t']}", mask_image(s["mask"])),
                  ("foreground from background", to_rgb(s["pred_foreground"])),
                  ("background from foreground", to_rgb(s["pred_background"]))]
        for j, (title, p) in enumerate(panels):
            ax = fig.add_subplot(grid[0, j] if j < 2 else grid[1, j - 2])
            ax.imshow(p, cmap="gray" if p.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
        ax = fig.add_subplot(grid[:, 2:])
        ts = np.arange(len(s["inpainting_error"]))
        ax.plot(ts, s["inpainting_error"].numpy(), label="inpainting error L_inp")
        if s["iou"] is not None:
            ax.plot(ts, s["iou"].numpy(), label="IoU with ground truth")
        # the regularised objective lives on another scale (sigma(M) is in the thousands)
        ax2 = ax.twinx()
        ax2.plot(ts, s["objective"].numpy(), color="tab:red", lw=0.9, ls="--",
                 label="regularised objective (right axis)")
        ax2.tick_params(labelsize=7)
        ax.plot([], [], color="tab:red", lw=0.9, ls="--", label="regularised objective (right)")
        ax.axvline(s["t"], color="k", lw=0.8, ls=":")
        ax.set_xlabel("iteration")
        settled = (f"settled at {s['settled_at']} (period {s['period']})" if s["period"]
                   else "still changing at the end")
        ax.set_title(f"{self.name}: {settled}", fontsize=9)
        ax.legend(fontsize=8, loc="lower right")
        fig.tight_layout()
        return fig

    # ---- the ipywidgets front end
    def widget(self):
        """The explorer as an ipywidgets box (call once; it draws immediately)."""
        import ipywidgets as w
        import matplotlib.pyplot as plt
        from IPython.display import display

        out = w.Output()
        status = w.HTML()
        c = {
            "name": w.Dropdown(options=list(self.images), value=self.name, description="image"),
            "sigma": w.FloatSlider(value=self.settings["sigma"], min=1, max=10, step=0.5, description="sigma"),
            "lam": w.SelectionSlider(
                options=sorted({0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, float(self.settings["lam"])}),
                value=float(self.settings["lam"]), description="lambda"),
            "init_size": w.IntSlider(value=self.settings["init_size"], min=16, max=120, step=2, description="square"),
            "iteration": w.IntSlider(value=self.iteration, min=0, max=self.iters, description="iteration"),
            "smoothing": w.Checkbox(value=bool(self.settings["smoothing"]), description="smoothing"),
            "boundary_only": w.Checkbox(value=bool(self.settings["boundary_only"]), description="boundary only"),
            "regulariser": w.Checkbox(value=bool(self.settings["regulariser"]), description="regulariser"),
        }
        upload = w.FileUpload(accept="image/*", multiple=False, description="your image")

        def redraw(*_):
            self.set(**{k: v.value for k, v in c.items()})
            with out:
                out.clear_output(wait=True)
                fig = self.figure()
                display(fig)
                plt.close(fig)
            status.value = self.message

        def on_upload(change):
            files = change["new"]
            for f in (files if isinstance(files, (list, tuple)) else files.values()):
                name = f["name"] if isinstance(f, dict) else f.name
                content = f["content"] if isinstance(f, dict) else f.content
                if self.add_image(name, bytes(content)):
                    new = self.name  # replacing the options resets the dropdown and redraws
                    c["name"].options = list(self.images)
                    c["name"].value = new
            redraw()

        for ctl in c.values():
            ctl.observe(redraw, names="value")
        upload.observe(on_upload, names="value")
        redraw()
        return w.VBox([w.HBox([c["name"], upload, status]),
                       w.HBox([c["sigma"], c["lam"], c["init_size"]]),
                       w.HBox([c["iteration"], c["smoothing"], c["boundary_only"], c["regulariser"]]),
                       out])
