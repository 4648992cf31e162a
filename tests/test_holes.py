"""Free-form holes: determinism, the official generator's ranges scaled to the image,
coverage, and the rendering against PIL's drawing of the same strokes."""
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from iemlib.holes import HoleConfig, free_form_hole, free_form_holes, render, sample_hole


def shapes(n, size, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [sample_hole(size, size, g) for _ in range(n)]


def test_same_generator_state_same_hole_and_batches_draw_in_sequence():
    a = free_form_hole(128, 128, torch.Generator().manual_seed(3))
    b = free_form_hole(128, 128, torch.Generator().manual_seed(3))
    c = free_form_hole(128, 128, torch.Generator().manual_seed(4))
    assert a.shape == (1, 128, 128) and a.dtype == torch.float32
    assert set(a.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(a, b) and not torch.equal(a, c)
    g = torch.Generator().manual_seed(5)
    one_by_one = torch.stack([free_form_hole(64, 96, g) for _ in range(3)])
    batch = free_form_holes(3, 64, 96, 5)                 # an int seed is accepted too
    assert batch.shape == (3, 1, 64, 96) and torch.equal(batch, one_by_one)


def test_ranges_are_the_official_ones_scaled_to_the_image():
    # official, at 256 px: 1-3 strokes of 4-11 steps, widths int(U[12, 40)), box 128 shrunk
    # by 0-16 px per side; at 128 px every length halves
    for size, (wlo, whi), (blo, bhi) in [(256, (12, 40), (96, 128)), (128, (6, 20), (48, 64))]:
        drawn = shapes(400, size)
        strokes = [len(s.strokes) for s in drawn]
        assert set(strokes) == {1, 2, 3}
        steps = {len(st.vertices) - 1 for s in drawn for st in s.strokes}
        assert steps == set(range(4, 12))
        widths = [st.width for s in drawn for st in s.strokes]
        assert wlo <= min(widths) <= wlo + 1 and whi - 2 <= max(widths) < whi
        radius = math.hypot(size, size) / 8
        for s in drawn:
            for st in s.strokes:
                v = np.array(st.vertices, dtype=float)
                assert (v >= 0).all() and (v <= size).all()
                assert np.hypot(*np.diff(v, axis=0).T).max() <= 2 * radius + 1.5
            top, left, bottom, right = s.box
            assert 0 <= top and 0 <= left and bottom <= size and right <= size
            assert blo <= bottom - top <= bhi and blo <= right - left <= bhi


def test_coverage_is_at_least_the_box_and_does_not_depend_on_the_size():
    means = {}
    for size in (64, 128, 256):
        holes = free_form_holes(120 if size < 256 else 60, size, size, 11)
        cover = holes.mean((1, 2, 3))
        # the smallest box alone covers (3/8)^2 of the image
        assert float(cover.min()) >= (3 / 8) ** 2 - 1e-6
        assert float(cover.max()) < 1.0
        means[size] = float(cover.mean())
    # every length scales with the image, so the covered fraction should not change
    assert max(means.values()) - min(means.values()) < 0.03, means


def pil_render(shape, size):
    """The official code's drawing: PIL lines of the stroke width, a disc of radius
    width // 2 at every vertex, plus the box."""
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    for st in shape.strokes:
        draw.line(st.vertices, fill=1, width=st.width)
        r = st.width // 2
        for x, y in st.vertices:
            draw.ellipse((x - r, y - r, x + r, y + r), fill=1)
    top, left, bottom, right = shape.box
    if bottom > top and right > left:
        draw.rectangle((left, top, right - 1, bottom - 1), fill=1)
    return torch.from_numpy(np.asarray(img, dtype=np.float32).copy())[None]


def test_rendering_matches_pil_drawing_the_same_strokes():
    # the two rasterise a thick line's edge differently (a pixel here and there); a wrong
    # width or a missing segment would cost far more than that
    from iemlib.holes import HoleShape
    ious = []
    for shape in shapes(40, 128, seed=2):
        strokes_only = HoleShape(shape.strokes, (0, 0, 0, 0))   # the box would dominate
        ours = render(strokes_only, 128, 128).bool()
        theirs = pil_render(strokes_only, 128).bool()
        ious.append(float((ours & theirs).sum() / (ours | theirs).sum()))
        assert abs(int(ours.sum()) - int(theirs.sum())) <= 0.1 * int(theirs.sum())
    assert min(ious) > 0.82 and np.mean(ious) > 0.93, (min(ious), np.mean(ious))


def test_a_stroke_covers_exactly_the_pixels_near_its_segments():
    from iemlib.holes import HoleShape, Stroke
    shape = HoleShape([Stroke([(5, 5), (25, 5)], 6)], (0, 0, 0, 0))
    hole = render(shape, 32, 32)[0]
    assert hole[5, 5:26].all() and hole[2:9, 15].all()          # within 3 px of the segment
    assert not hole[9, 15] and not hole[1, 15]                   # 4 px away
    assert hole[5, 2] and not hole[5, 1]                          # round end: 3 px beyond the vertex
    assert hole.sum() < 32 * 32 / 4


def test_bad_arguments():
    with pytest.raises(TypeError):
        free_form_hole(32, 32, rng="seed")
    with pytest.raises(ValueError):
        HoleConfig(strokes=(3, 1))
    with pytest.raises(ValueError):
        HoleConfig(box=300)
