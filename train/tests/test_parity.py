"""Our PyTorch modules against the reference trace (`tests/fixtures/parity` or MIDM_PARITY_DIR)."""
import json
import os

import pytest
import torch

from train.midm import MIDM, DdimSchedule

DIR = os.environ.get("MIDM_PARITY_DIR",
                     os.path.join(os.path.dirname(__file__), "..", "..", "tests", "fixtures", "parity"))
pytestmark = pytest.mark.skipif(not os.path.exists(os.path.join(DIR, "trace.safetensors")),
                                reason="no parity fixture set")


@pytest.fixture(scope="module")
def setup():
    from safetensors.torch import load_file

    cfg = json.load(open(os.path.join(DIR, "config.json")))
    mi = cfg["midms"]
    m = MIDM(cfg["ldm_config"], label_nc=mi["label_nc"], n_ch=mi["N_CH"], ndf=mi["corr_ndf"],
             spade_nhidden=mi["spade_nhidden"])
    m.load_state_dict(load_file(os.path.join(DIR, "weights.safetensors")), strict=True)
    m.eval()
    return m, load_file(os.path.join(DIR, "trace.safetensors")), cfg


def close(name, got, want, tol):
    assert tuple(got.shape) == tuple(want.shape), (name, got.shape, want.shape)
    if want.dtype in (torch.int64, torch.int32):
        assert torch.equal(got.long(), want.long()), name
        return
    err = (got.float() - want.float()).abs().max().item()
    scale = max(want.float().abs().max().item(), 1.0)
    assert err <= tol * scale, f"{name}: max abs error {err:.3e} > {tol * scale:.3e}"


@torch.no_grad()
def test_spectral_norm_and_schedule(setup):
    m, tr, cfg = setup
    for name in cfg["sn_modules"]:
        mod = m.get_submodule(name)
        for hook in mod._forward_pre_hooks.values():  # spectral norm sets .weight before forward
            hook(mod, None)
        close(f"sn_eff.{name}", mod.weight, tr[f"sn_eff.{name}.weight"], 1e-6)
    for s, eta in ((16, 0.0), (200, 1.0)):
        sch = DdimSchedule(m.diff_model.alphas_cumprod, s, eta)
        close("ts", torch.tensor(sch.timesteps), tr[f"ddim{s}.ddim_timesteps"], 0)
        close("a", sch.alphas, tr[f"ddim{s}.ddim_alphas"], 1e-7)
        close("ap", sch.alphas_prev, tr[f"ddim{s}.ddim_alphas_prev"], 1e-7)
        close("sig", sch.sigmas, tr[f"ddim{s}.ddim_sigmas"], 1e-6)
        close("som", sch.sqrt_one_minus_alphas, tr[f"ddim{s}.ddim_sqrt_one_minus_alphas"], 1e-7)


@torch.no_grad()
def test_autoencoder(setup):
    m, tr, _ = setup
    ae = m.ae
    x = tr["input.exemplar"]
    close("ae.encoder_out", ae.encoder(x), tr["ae.encoder_out"], 1e-5)
    z = ae.encode(x)
    close("ae.latent", z, tr["ae.latent"], 1e-5)
    close("ae.quant_indices", ae.quantize.indices(tr["ae.latent"]), tr["ae.quant_indices"], 0)
    close("ae.quant", ae.quantize(tr["ae.latent"])[0], tr["ae.quant"], 1e-6)
    close("ae.decoded_noquant", ae.decode_noquant(tr["ae.latent"]), tr["ae.decoded_noquant"], 1e-5)
    close("ae.decoded", ae.decode(tr["ae.latent"]), tr["ae.decoded"], 1e-5)


@torch.no_grad()
def test_unet(setup):
    m, tr, _ = setup
    trace = {}
    eps = m.diff_model.model.diffusion_model(tr["unet.x"], tr["unet.t"], trace=trace)
    for k in ["unet.t_emb", "unet.emb", "unet.input_blocks.1", "unet.input_blocks.4", "unet.middle_block",
              "unet.output_blocks.2"]:
        close(k, trace[k], tr[k], 1e-5)
    close("unet.eps", eps, tr["unet.eps"], 1e-5)


@torch.no_grad()
def test_correspondence_stagewise(setup):
    m, tr, _ = setup
    trace = {}
    m.match(tr["input.cond_label"], tr["corr.ref_feats"], tr["input.exemplar_label"], trace=trace)
    for k in ["corr.cond_label_ds", "corr.exemplar_label_ds", "corr.seg_enc.layer1", "corr.trg_matching_feats",
              "corr.ref_matching_feats", "corr.trg_layer0_out", "corr.trg_layer_out", "corr.ref_layer_out",
              "corr.trg_out", "corr.ref_out", "corr.corr_ref"]:
        close(k, trace[k], tr[k], 2e-5)
    close("corr.warped_ref_feat", trace["corr.warped_ref_feat"], tr["corr.warped_ref_feat"], 1e-4)


@torch.no_grad()
def test_flow_and_mask_stagewise(setup):
    from train.ops import fb_mask, fbcheck, get_flow

    _, tr, _ = setup
    fl = get_flow(tr["corr.corr_ref"])
    for k, v in zip(["map_trg", "map_src", "flow_trg", "flow_src"], fl):
        close(f"flow_ref.{k}", v, tr[f"flow_ref.{k}"], 1e-4)
    fb_ts, fb_st = fbcheck(tr["flow_ref.map_trg"], tr["flow_ref.map_src"], tr["flow_ref.flow_trg"],
                           tr["flow_ref.flow_src"])
    close("fb_ts", fb_ts, tr["flow_ref.fb_ts"], 1e-5)
    close("fb_st", fb_st, tr["flow_ref.fb_st"], 1e-5)
    close("fb_mask", fb_mask(tr["flow_ref.fb_ts"]), tr["flow_ref.fb_mask"], 0)


@torch.no_grad()
def test_full_translate_end_to_end(setup):
    m, tr, _ = setup
    noises = {"loop.0.q_noise": tr["loop.0.q_noise"], "refine.q_noise": tr["refine.q_noise"],
              "refine.noise": tr["refine.noise"]}
    trace = {}
    out, mask = m.translate(tr["input.cond_label"], tr["input.exemplar"], tr["input.exemplar_label"],
                            noises=noises, trace=trace)
    for k in ["loop.t_list", "out.fb_mask"] + [f"loop.{i}.{n}" for i in range(4)
                                               for n in ["t", "index", "a_prev_sqrt"]]:
        close(k, trace[k], tr[k], 1e-6)
    for i in range(4):
        for n in ["hijack_feat", "x_in", "eps", "pred_x0", "dir_xt", "x_prev"]:
            close(f"loop.{i}.{n}", trace[f"loop.{i}.{n}"], tr[f"loop.{i}.{n}"], 2e-4)
    for n in ["hijack_feat", "x_start", "x_in", "final_latent", "sigma"]:
        close(f"refine.{n}", trace[f"refine.{n}"], tr[f"refine.{n}"], 2e-4)
    for n in ["t", "index", "q_t"]:
        close(f"refine.{n}", trace[f"refine.{n}"], tr[f"refine.{n}"], 0)
    close("out.final_quant_indices", trace["out.final_quant_indices"], tr["out.final_quant_indices"], 0)
    close("out.warped_ref", out, tr["out.warped_ref"], 1e-4)
