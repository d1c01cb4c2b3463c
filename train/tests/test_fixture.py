"""The fixture emitter writes a set in the layout of tests/fixtures/parity that replays exactly."""
import json
import os
import struct

import torch
from safetensors.torch import load_file

from train.config import corr_kwargs, default_config
from train.fixture import build_fixture
from train.midm import MIDM

REF = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "parity")


def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h


def test_fixture_roundtrip(tmp_path):
    torch.manual_seed(0)
    cfg = default_config()
    model = MIDM(cfg, **corr_kwargs(cfg)).eval()
    build_fixture(model, cfg, str(tmp_path))
    conf = json.load(open(tmp_path / "config.json"))
    for k in ["image_size", "autoencoder", "unet", "ddpm_schedule", "midms"]:
        assert k in conf
    assert conf["midms"]["label_nc"] == 1 and conf["autoencoder"]["ch_mult"] == [1, 2, 2]
    trace = load_file(str(tmp_path / "trace.safetensors"))
    if os.path.exists(os.path.join(REF, "trace.safetensors")):
        ref = header(os.path.join(REF, "trace.safetensors"))
        ours = header(str(tmp_path / "trace.safetensors"))
        assert set(ref) <= set(ours), sorted(set(ref) - set(ours))
        for k in ref:
            assert ref[k]["dtype"] == ours[k]["dtype"], k
    # A fresh module loaded from the written weights replays the trace exactly.
    fresh = MIDM(conf["ldm_config"], label_nc=1, n_ch=conf["midms"]["N_CH"], ndf=conf["midms"]["corr_ndf"],
                 spade_nhidden=conf["midms"]["spade_nhidden"])
    fresh.load_state_dict(load_file(str(tmp_path / "weights.safetensors")))
    fresh.eval()
    noises = {k: trace[k] for k in ["loop.0.q_noise", "refine.q_noise", "refine.noise"]}
    with torch.no_grad():
        out, _ = fresh.translate(trace["input.cond_label"], trace["input.exemplar"], trace["input.exemplar_label"],
                                 noises=noises)
    assert torch.equal(out, trace["out.warped_ref"])


def test_margins_clear_asks_every_vq_and_cycle_check_margin():
    from train.fixture import margins_clear

    ok = {"vq_a": 2e-5, "vq_b": 1e-5, "min_abs_fb_x": 1e-4, "min_abs_fb_y": [2e-4, 3e-5]}
    assert margins_clear(ok)
    assert not margins_clear({**ok, "vq_b": 1.3e-6})  # model v1.2's first asset pairs: a code flipped
    assert not margins_clear({**ok, "min_abs_fb_y": [2e-4, 1e-6]})
