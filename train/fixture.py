"""Emit a parity fixture set from OUR modules: `python -m train.fixture --out DIR`.

Same layout as tests/fixtures/parity (weights.safetensors, trace.safetensors with the same tensor
names, config.json with the fields the Rust tests read), so the Rust parity tests run on it with
MIDM_PARITY_DIR=DIR. Weights: `--weights weights` (the shipped model, default when present) or
`--random` (fresh initialisation with spectral-norm u, v after 2 power iterations, as the reference
fixture). Inputs: the assets/ sketches and exemplars when present, else random.
"""
import argparse
import glob
import json
import os

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from .config import RECIPES, apply_recipe, corr_kwargs, default_config
from .midm import MIDM, DdimSchedule


def asset_inputs(size, n=2, offset=0):
    """The assets/ pairs `offset` .. `offset + n - 1` (sorted by name), or None when there are too few."""
    sketches = sorted(glob.glob(os.path.join("assets", "*_sketch.png")))
    if len(sketches) < offset + n:
        return None
    conds, exs, exl, srcs = [], [], [], []
    from .data import edge_map

    for s in sketches[offset:offset + n]:
        e = np.asarray(Image.open(s).convert("L").resize((size, size), Image.NEAREST), np.float32) / 255.0
        ex = Image.open(s.replace("_sketch", "_exemplar")).convert("RGB").resize((size, size), Image.LANCZOS)
        ex = np.array(ex, np.uint8)  # a writable copy: torch.from_numpy warns on a read-only view
        conds.append(torch.from_numpy((e > 0.5).astype(np.float32))[None])
        exl.append(torch.from_numpy(edge_map(ex))[None])
        exs.append(torch.from_numpy(ex).permute(2, 0, 1).float() / 127.5 - 1)
    srcs = [x.flip(2) for x in exs]
    return torch.stack(conds), torch.stack(exs), torch.stack(exl), torch.stack(srcs)


def vq_margin(ae, z):
    """Smallest distance of a latent vector to a VQ decision boundary (between its two nearest codes)."""
    zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1]).double()
    e = ae.quantize.embedding.weight.double()
    d = torch.cdist(zf, e)
    two = d.topk(2, largest=False)
    i0, i1 = two.indices[:, 0], two.indices[:, 1]
    diff = e[i1] - e[i0]
    return ((two.values[:, 1] ** 2 - two.values[:, 0] ** 2) / (2 * diff.norm(dim=1))).min().item()


@torch.no_grad()
def build_fixture(model, cfg, out, seed=1012, offset=0):
    torch.manual_seed(seed)
    image = cfg["midms"].get("image_size", 64)
    lnc = model.label_nc
    h = cfg["model"]["params"]["image_size"]
    c = model.ae.quant_conv.out_channels
    ins = asset_inputs(image, offset=offset) if lnc == 1 else None
    if ins is None:
        cond = torch.rand(2, lnc, image, image)
        exl = torch.rand(2, lnc, image, image)
        ex = torch.rand(2, 3, image, image) * 2 - 1
        src = torch.rand(2, 3, image, image) * 2 - 1
    else:
        cond, ex, exl, src = ins
        if model.region_matching and model.background_latent is not None:
            # The second pair gets a photo exemplar (no white outside), so that the set checks
            # region matching's background fill (ops.fill_outside) as well as its restriction.
            from .data import edge_map

            ph = Image.open(os.path.join("assets", "drawn", "cat_photo_exemplar.png")).convert("RGB")
            ph = np.asarray(ph.resize((image, image), Image.LANCZOS), np.uint8)
            ex[1] = torch.from_numpy(ph).permute(2, 0, 1).float() / 127.5 - 1
            exl[1] = torch.from_numpy(edge_map(ph))[None]
    if getattr(model, "frame_drawing", 0) and lnc == 1:
        # The first drawing at half its size near a corner, so that the set checks the framing of a
        # small drawing (train.frame) and, in the second, a drawing left as it is.
        small = cond[0, :, ::2, ::2].clone()
        cond[0] = 0
        cond[0, :, 8:8 + small.shape[-2], image - 8 - small.shape[-1]:image - 8] = small
    wide = getattr(model, "close_wide_gaps", None)
    if (getattr(model, "close_gaps", 0) or wide) and lnc == 1:
        # The second drawing becomes the hand-drawn heart (thin strokes, as users draw; the assets' edge
        # maps have doubled outlines a cut does not open) with a gap cut into its outline, so that the
        # set checks the closing of a gap (ops.close_plane) and, in the first, a drawing left as it is:
        # radius + 1 px wide, or with the wider pass the widest cut up to its 2 * radius that the first
        # pass leaves open and it closes.
        from .drawn_eval import read_condition
        from .drawn_test import cut_gap
        from .ops import close_plane

        lines = read_condition(os.path.join("assets", "drawn", "heart_sketch.png"), image) > 0.5
        cut = None if wide else cut_gap(lines, model.close_gaps + 1, seed)
        for width in range(2 * wide[0], model.close_gaps, -1) if wide else ():
            cut = cut_gap(lines, width, seed)
            first = cut if cut is None else close_plane(cut, model.close_gaps)
            if first is not None and (first == cut).all() and (close_plane(first, *wide) != first).any():
                break
        else:
            cut = None if wide else cut
        if cut is None:
            raise SystemExit("no gap the model closes could be cut into the fixture's heart")
        cond[1, 0] = torch.from_numpy(cut.astype(np.float32))
    if getattr(model, "frame_exemplar", 0) and lnc == 1:
        # The first exemplar at half its size near another corner, so that the set checks the framing
        # of a small glyph (train.frame.frame_exemplars); the second fills its image (or is a photo).
        small, small_label = F.avg_pool2d(ex[0:1], 2)[0], F.max_pool2d(exl[0:1], 2)[0]
        s = small.shape[-1]
        ex[0], exl[0] = 1.0, 0.0
        ex[0, :, image - 8 - s:image - 8, 8:8 + s] = small
        exl[0, :, image - 8 - s:image - 8, 8:8 + s] = small_label
    if getattr(model, "clear_exemplar_ground", False):
        # The first exemplar's white surround painted a plain light blue, so that the set checks the
        # clearing of a plain ground (ops.clear_plain_ground) before anything else is made of it.
        ground = (ex[0] == 1).all(0)
        ex[0][:, ground] = torch.tensor([180.0, 210.0, 240.0])[:, None] / 127.5 - 1
    tr = {"input.cond_label": cond, "input.exemplar": ex, "input.exemplar_label": exl, "input.src_image": src}
    ae = model.ae
    tr["ae.encoder_out"] = ae.encoder(ex)
    tr["ae.latent"] = ae.encode(ex)
    tr["ae.quant"], _, tr["ae.quant_indices"] = ae.quantize(tr["ae.latent"])
    tr["ae.decoded"] = ae.decode(tr["ae.latent"])
    tr["ae.decoded_noquant"] = ae.decode_noquant(tr["ae.latent"])
    tr["corr.src_feats"] = ae.encode(src)
    ux = torch.randn(2, model.diff_model.model.diffusion_model.in_channels, h, h)  # latent (+ condition)
    ut = torch.randint(0, 1000, (2,))
    tt = {}
    tr["unet.eps"] = model.diff_model.model.diffusion_model(ux, ut, trace=tt)
    tr.update({"unet.x": ux, "unet.t": ut})
    for k in ["unet.t_emb", "unet.emb", "unet.input_blocks.1", "unet.input_blocks.4", "unet.middle_block",
              "unet.output_blocks.2"]:
        if k in tt:
            tr[k] = tt[k]
    # The refinement's schedule as run: the options' eta 1, or our own model's `midms.refine_eta`.
    for s, eta in ((16, 0.0), (200, model.refine_eta)):
        sch = DdimSchedule(model.diff_model.alphas_cumprod, s, eta)
        tr[f"ddim{s}.ddim_timesteps"] = torch.tensor(sch.timesteps, dtype=torch.long)
        tr[f"ddim{s}.ddim_alphas"] = sch.alphas
        tr[f"ddim{s}.ddim_alphas_prev"] = sch.alphas_prev
        tr[f"ddim{s}.ddim_sigmas"] = sch.sigmas
        tr[f"ddim{s}.ddim_sqrt_one_minus_alphas"] = sch.sqrt_one_minus_alphas
    sn_modules = [f"{e}.{m}" for e in ("real_enc", "iter_enc", "seg_enc")
                  for m in ("layer1.0", "layer2.0", "layer3.0", "G_middle_1.conv_0", "G_middle_1.conv_1",
                            "G_middle_1.conv_s")]
    sigmas = []
    for name in sn_modules:
        mod = model.get_submodule(name)
        for hook in mod._forward_pre_hooks.values():
            hook(mod, None)
        tr[f"sn_eff.{name}.weight"] = mod.weight.detach().clone()
        w = mod.weight_orig.reshape(mod.weight_orig.shape[0], -1)
        sigmas.append(torch.dot(mod.weight_u, w @ mod.weight_v))
    tr["sn_eff.sigmas"] = torch.stack(sigmas)
    shape = (2, c, h, h)
    noises = {"loop.0.q_noise": torch.randn(shape), "refine.q_noise": torch.randn(shape),
              "refine.noise": torch.randn((20,) + shape)}
    tr["refine.x_T_discarded"] = torch.randn(shape)
    t = {}
    model.translate(cond, ex, exl, noises=noises, trace=t)
    tr.update(t)
    tr = {k: v.detach().clone().contiguous() for k, v in tr.items()}
    os.makedirs(out, exist_ok=True)
    save_file({k: v.float().contiguous() for k, v in model.state_dict().items()},
              os.path.join(out, "weights.safetensors"))
    save_file(tr, os.path.join(out, "trace.safetensors"))
    margins = {
        "vq_min_distance_to_voronoi_boundary_ae_decode": vq_margin(ae, tr["ae.latent"]),
        "vq_min_distance_to_voronoi_boundary_warped_ref_decode": vq_margin(ae, tr["corr.warped_ref_feat"]),
        "vq_min_distance_to_voronoi_boundary_final_decode": vq_margin(ae, tr["refine.final_latent"]),
        "min_abs_fb_minus_0.5_flow_ref": (tr["flow_ref.fb_ts"] - 0.5).abs().min().item(),
        "min_abs_fb_minus_0.5_loop_1_and_2": [(tr[f"loop.{k}.fb_ts"] - 0.5).abs().min().item() for k in (1, 2)],
    }
    config = fixture_config(model, cfg, sn_modules, sigmas, margins, seed)
    config["asset_pair_offset"] = offset if ins is not None else None
    json.dump(config, open(os.path.join(out, "config.json"), "w"), indent=1)
    return tr, margins


def fixture_config(model, cfg, sn_modules, sigmas, margins, seed):
    p = cfg["model"]["params"]
    fs = p["first_stage_config"]["params"]
    dd = fs["ddconfig"]
    un = p["unet_config"]["params"]
    mi = cfg["midms"]
    s16 = DdimSchedule(model.diff_model.alphas_cumprod, 16, 0.0)
    s200 = DdimSchedule(model.diff_model.alphas_cumprod, 200, 1.0)
    return {
        "source": {"implementation": "midm trainer (train/), PyTorch modules checked against the authors' reference fixtures (tests/fixtures/parity)"},
        "set": "trainer", "seed": seed, "dtype": "float32 (int64 for index/timestep tensors)", "batch_size": 2,
        "image_size": mi.get("image_size", 64), "latent_size": p["image_size"], "label_nc": mi["label_nc"],
        "ldm_config": {"model": cfg["model"]},
        "autoencoder": {"type": "VQModelInterface (VQ-f4 layout)", "embed_dim": fs["embed_dim"],
                        "n_embed": fs["n_embed"], "z_channels": dd["z_channels"], "double_z": dd["double_z"],
                        "ch": dd["ch"], "ch_mult": dd["ch_mult"], "num_res_blocks": dd["num_res_blocks"],
                        "attn_resolutions": dd["attn_resolutions"],
                        "groupnorm": {"groups": 32, "eps": 1e-6, "affine": True}},
        "unet": {"type": "openaimodel.UNetModel", "image_size": un["image_size"], "in_channels": un["in_channels"],
                 "out_channels": un["out_channels"], "model_channels": un["model_channels"],
                 "channel_mult": un["channel_mult"], "num_res_blocks": un["num_res_blocks"],
                 "attention_resolutions": un["attention_resolutions"],
                 "num_head_channels": un["num_head_channels"], "num_heads": None, "legacy": True,
                 "use_scale_shift_norm": False, "time_embed_dim": 4 * un["model_channels"]},
        "ddpm_schedule": {"linear_start": p["linear_start"], "linear_end": p["linear_end"],
                          "timesteps": p["timesteps"], "parameterization": "eps"},
        "midms": {"backbone": "VQGAN", "phase": "e2e_recurrent", "confidence_masking": True, "maskmix": True,
                  "N_CH": mi["N_CH"], "label_nc": mi["label_nc"], "layer_channels": mi["N_CH"] + mi["label_nc"],
                  "corr_ndf": mi["corr_ndf"], "spade_nhidden": mi["spade_nhidden"],
                  "label_downsample": model.label_downsample, "label_fill": model.label_fill,
                  "region_matching": model.region_matching, "background_latent": model.background_latent,
                  "region_open_strokes": model.region_open_strokes,
                  "region_keep_outside": model.region_keep_outside,
                  "layout_prior": model.layout_prior,
                  "colour_layout_prior": model.colour_layout_prior,
                  "frame_drawing": model.frame_drawing,
                  "frame_exemplar": model.frame_exemplar,
                  "clear_exemplar_ground": model.clear_exemplar_ground,
                  "close_gaps": model.close_gaps,
                  "close_wide_gaps": list(model.close_wide_gaps) if model.close_wide_gaps else None,
                  "colour_transfer": model.colour_transfer,
                  "colour_temperature": model.colour_temperature,
                  "colour_gamut": model.colour_gamut,
                  "refine_eta": model.refine_eta,
                  "unet_condition": model.unet_condition,
                  "inference": {"ddim_num_steps": 16, "ddim_eta": 0.0, "t_list": [12, 13, 14, 15],
                                "rewarp_at_loop_indices": [1, 2],
                                "refine": {"ddim_num_steps": 200, "eta": 1.0, "hijack_step": 180}}},
        "derived_timesteps": {
            "ddim16_timesteps": s16.timesteps.tolist(), "loop_q_sample_t": int(s16.time_range[11]),
            "loop_unet_t": [int(s16.time_range[s]) for s in (12, 13, 14, 15)],
            "loop_index": [17 - s - 1 for s in (12, 13, 14, 15)],
            "refine_q_sample_t": int(s200.time_range[179]),
            "refine_unet_t": [int(s200.time_range[i]) for i in range(180, 200)],
            "refine_index": [199 - i for i in range(180, 200)]},
        "numerical_margins": margins,
        "sn_modules": sn_modules,
        "sn_sigmas": {n: float(s) for n, s in zip(sn_modules, sigmas)},
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--weights", default="weights", help="directory with model.safetensors + config.yaml")
    ap.add_argument("--random", action="store_true", help="random weights with the default config")
    ap.add_argument("--seed", type=int, default=1012)
    ap.add_argument("--recipe", choices=list(RECIPES), default="v1",
                    help="with --random: the model recipe (v2: wider matching, max-pooled labels; "
                         "v1.1: max-pooled labels and the filled drawing)")
    ap.add_argument("--layout-prior", type=float, default=None,
                    help="set the model's midms.layout_prior (the latent matchings' layout weight, "
                         "ops.layout_penalty), so that the set exercises it; default: the model's")
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.random or not os.path.exists(os.path.join(a.weights, "model.safetensors")):
        torch.manual_seed(a.seed)
        cfg = apply_recipe(default_config(), a.recipe)
        model = MIDM(cfg, **corr_kwargs(cfg))
        model.train()
        with torch.no_grad():  # 2 power iterations on u, v (as the reference fixture), no weight change
            for _ in range(2):
                for m in model.modules():
                    for hook in list(m._forward_pre_hooks.values()):
                        if type(hook).__name__ == "SpectralNorm":
                            hook(m, None)
        model.eval()
        which = "random"
    else:
        from .export import load_exported

        model, cfg = load_exported(a.weights)
        which = a.weights
    if a.layout_prior is not None:
        if not model.region_matching:
            raise SystemExit("--layout-prior needs a model with midms.region_matching")
        model.layout_prior = cfg["midms"]["layout_prior"] = a.layout_prior
        which += f", midms.layout_prior {a.layout_prior}"
    # A latent within float noise of a VQ decision boundary, or a cycle-check value within it of the
    # mask's 0.5 threshold, makes the Rust side pick the other code or mask value: a different image
    # that is no parity error (model v1.2's weights on the first two asset pairs: the encoded
    # exemplar 1.3e-6 from a boundary, the decoded warp 1.2e-2 apart). The encoded and warped
    # latents depend on the inputs only, the later ones on the seed too: so the next asset pairs,
    # then the next seeds, until every margin is several times the distance at which a code flipped.
    found = False
    for offset in range(4):
        for seed in range(a.seed, a.seed + 5):
            _, margins = build_fixture(model, cfg, a.out, seed, offset)
            if margins_clear(margins):
                found = True
                break
            print(f"asset pairs from {offset}, seed {seed}: margins too small for a parity fixture {margins}")
            if not margins_clear({k: v for k, v in margins.items() if k in INPUT_ONLY_MARGINS}):
                break  # no seed changes these: the next pairs
        if found:
            break
    else:
        raise SystemExit("no asset pairs and seed tried give clear margins")
    print(f"fixture ({which}, asset pairs from {offset}, seed {seed}) written to {a.out}; margins {margins}")


# Margins of latents that depend on the inputs only (the encoded exemplar and its warp), not on the seed.
INPUT_ONLY_MARGINS = ("vq_min_distance_to_voronoi_boundary_ae_decode",
                      "vq_min_distance_to_voronoi_boundary_warped_ref_decode")


def margins_clear(margins, vq=5e-6, fb=1e-5):
    vals = lambda pre: [x for k, v in margins.items() if k.startswith(pre) for x in (v if isinstance(v, list) else [v])]
    return min(vals("vq_") or [vq]) >= vq and min(vals("min_abs_fb") or [fb]) >= fb


if __name__ == "__main__":
    main()
