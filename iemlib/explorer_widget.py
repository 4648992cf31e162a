"""The ipywidgets front end of :class:`iemlib.viz.IEMExplorer`.

How it draws, and why: ipykernel 7 runs widget callbacks on a thread of their own (a kernel
subshell) while IPython's post-execute hooks, matplotlib's inline flush among them, may run
on that thread under the callback's message. A pyplot figure made in a callback, or output
captured by an ``Output`` widget, can then come out blank or half drawn and be published to
no cell (JupyterLab shows it in its Log Console). So every picture here is the explorer's
own ``matplotlib.figure.Figure``, rendered by the Agg canvas into PNG bytes and shown in an
``ipywidgets.Image``: no pyplot, no captured output, no global state touched by a callback.

Each change draws exactly once: while the box itself updates its controls (the image list
after an upload) their observers stay silent.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager

import ipywidgets as w

from .viz import IEMExplorer

#: lambda values on the slider (the explorer's own value is added when it is not one)
LAMBDAS = (0.0, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


class ExplorerBox(w.VBox):
    """The explorer's box: the live widget in JupyterLab or Jupyter Notebook. Its
    ``_repr_mimebundle_`` also carries the current picture (image/png) and says what it is
    in text/plain, so that a viewer without widgets (a repository browser, a notebook opened
    untrusted) shows the figure instead of a ``VBox(children=...`` line."""

    explorer: IEMExplorer | None = None
    picture: w.Image | None = None

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        if self.explorer is not None:
            e = self.explorer
            bundle["text/plain"] = (f"IEM explorer: {e.name}, iteration {e.iteration} of {e.iters} "
                                    "(a live widget: run the notebook to use its controls)")
        if self.picture is not None and self.picture.value:
            bundle["image/png"] = bytes(self.picture.value)
        return bundle


def controls(explorer: IEMExplorer) -> dict:
    """One control per setting of :meth:`IEMExplorer.set`, keyed by it, at the explorer's
    current values, sized to keep their width at 1280 pixels beside JupyterLab's sidebar."""
    s = explorer.settings
    label = {"description_width": "70px"}
    third = dict(flex="1 1 260px", min_width="260px", max_width="340px")
    return {
        "name": w.Dropdown(options=list(explorer.images), value=explorer.name, description="image",
                           style=label, layout=w.Layout(width="380px")),
        # each new value of these reruns IEM: once, when the handle is let go
        "sigma": w.FloatSlider(value=s["sigma"], min=1, max=10, step=0.5, description="sigma",
                               continuous_update=False, style=label, layout=w.Layout(**third)),
        "lam": w.SelectionSlider(options=sorted({*LAMBDAS, float(s["lam"])}), value=float(s["lam"]),
                                 description="lambda", continuous_update=False, style=label,
                                 disabled=not s["regulariser"], layout=w.Layout(**third)),
        "init_size": w.IntSlider(value=s["init_size"], min=16, max=120, step=2, description="square",
                                 continuous_update=False, style=label, layout=w.Layout(**third)),
        # moving in time reuses the cached run, so the picture may follow the handle
        "iteration": w.IntSlider(value=explorer.iteration, min=0, max=explorer.iters, description="iteration",
                                 style=label, layout=w.Layout(width="100%", max_width="820px")),
        "smoothing": w.Checkbox(value=bool(s["smoothing"]), description="smoothing", indent=False,
                                layout=w.Layout(width="auto", margin="0 24px 0 74px")),
        "boundary_only": w.Checkbox(value=bool(s["boundary_only"]), description="boundary only",
                                    indent=False, layout=w.Layout(width="auto", margin="0 24px 0 0")),
        "regulariser": w.Checkbox(value=bool(s["regulariser"]), description="regulariser", indent=False,
                                  layout=w.Layout(width="auto")),
    }


def uploaded_files(value):
    """(name, bytes) of each file in a FileUpload value (ipywidgets 8: a tuple of dicts;
    7: a dict of dicts)."""
    for f in (value if isinstance(value, (list, tuple)) else value.values()):
        yield (f["name"], bytes(f["content"])) if isinstance(f, dict) else (f.name, bytes(f.content))


def explorer_widget(explorer: IEMExplorer) -> ExplorerBox:
    """Controls, status line and picture for ``explorer``; drawn once before returning."""
    c = controls(explorer)
    upload = w.FileUpload(accept="image/*", multiple=False, description="your image",
                          layout=w.Layout(width="auto"))
    # a line of its own, always there, so that a message never moves the controls
    status = w.Label(layout=w.Layout(min_height="22px", margin="0 0 0 78px"))
    status.add_class("iem-status")
    picture = w.Image(format="png", layout=w.Layout(max_width="100%", height="auto"))

    # callbacks arrive one after another on the subshell thread, but the first drawing runs on
    # the cell's thread: one lock per explorer (shared by all its boxes) keeps each change
    # whole; re-entrant, because a callback that sets a control runs that control's observer
    # on the same thread
    lock = explorer.__dict__.setdefault("_widget_lock", threading.RLock())
    muted = [False]

    @contextmanager
    def quietly():
        muted[0] = True
        try:
            yield
        finally:
            muted[0] = False

    def draw() -> None:
        explorer.set(**{k: ctl.value for k, ctl in c.items()})
        c["lam"].disabled = not explorer.settings["regulariser"]
        picture.value = explorer.png()

    def guarded(what: str, job) -> None:
        # a callback's exception would print a traceback to no cell (the Log Console): say
        # it on the status line instead
        try:
            job()
        except Exception as err:  # noqa: BLE001
            status.value = f"{what} failed: {type(err).__name__}: {err}"

    def on_control(change) -> None:
        with lock:
            if not muted[0]:
                status.value = ""
                guarded("drawing", draw)

    def add(files) -> None:
        added = False
        for name, data in uploaded_files(files):
            added |= explorer.add_image(name, data)
        status.value = explorer.message
        if added:
            with quietly():                   # one drawing, of the new image, below
                c["name"].options = list(explorer.images)
                c["name"].value = explorer.name
            draw()

    def on_upload(change) -> None:
        with lock:
            if muted[0] or not change["new"]:
                return
            guarded("the upload", lambda: add(change["new"]))
            with quietly():                   # forget the bytes; the same file may come again
                upload.value = ()

    for ctl in c.values():
        ctl.observe(on_control, names="value")
    upload.observe(on_upload, names="value")
    with lock:
        draw()
    row = w.Layout(flex_flow="row wrap", align_items="center")   # wrap rather than squeeze
    box = ExplorerBox([w.HBox([c["name"], upload], layout=row), status,
                       w.HBox([c["sigma"], c["lam"], c["init_size"]], layout=row),
                       w.HBox([c["smoothing"], c["boundary_only"], c["regulariser"]], layout=row),
                       w.HBox([c["iteration"]], layout=w.Layout(width="100%")),
                       picture])
    box.add_class("iem-explorer")
    box.explorer, box.picture = explorer, picture
    return box
