"""train.rank_eval: the outline rule of the editor's gallery (`src/sampling/silhouette.rs`)."""
import numpy as np
import torch

from train.rank_eval import own_ranks, silhouette, similarity, sketch_shapes


def rect(h, w, y0, y1, x0, x1):
    m = np.zeros((h, w), bool)
    m[y0:y1, x0:x1] = True
    return m


def test_the_same_shape_elsewhere_and_larger_matches_fully():
    assert similarity(silhouette(rect(128, 128, 10, 30, 5, 45)), silhouette(rect(128, 128, 40, 100, 0, 120))) == 1.0


def test_other_proportions_and_shapes_score_lower_and_empty_scores_zero():
    square, wide = silhouette(rect(64, 64, 0, 40, 0, 40)), silhouette(rect(64, 64, 0, 20, 0, 40))
    assert abs(similarity(square, wide) - 0.5) < 1e-6
    ell = rect(64, 64, 0, 40, 0, 20) | rect(64, 64, 20, 40, 20, 40)  # the square without a quarter
    s = similarity(square, silhouette(ell))
    assert abs(s - 0.75) < 0.02 and s == similarity(silhouette(ell), square)
    assert silhouette(np.zeros((8, 8), bool)) is None and similarity(None, square) == 0.0


def test_a_drawn_outline_counts_with_its_inside_and_open_strokes_with_their_pixels():
    label = torch.zeros(1, 1, 64, 64)
    label[0, 0, 10, 10:50] = label[0, 0, 49, 10:50] = 1
    label[0, 0, 10:50, 10] = label[0, 0, 10:50, 49] = 1
    label[0, 0, 55, 5:60] = 1  # an open stroke below, 20 px from the square
    shape = sketch_shapes(label)[0].numpy()
    assert shape[30, 30] and shape[55, 20] and not shape[52, 20]


def test_own_ranks_count_a_tie_half():
    a, b = silhouette(rect(32, 32, 0, 32, 0, 32)), silhouette(rect(32, 32, 0, 16, 0, 32))
    # Sketch 0 ties with exemplars 0 and 2 (one other: half a place); sketch 1 is first alone.
    assert own_ranks([a, b, a], [a, b, a]).tolist() == [1.5, 1.0, 1.5]
