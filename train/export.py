"""Export the trained model: `python -m train.export [--run train/runs] [--out weights]`.

Writes `<out>/model.safetensors` (float32, or float16 with `--dtype f16`; canonical MIDMs key names: `diff_model.first_stage_model.*`,
`diff_model.model.diffusion_model.*`, the DDPM schedule buffers `diff_model.betas` ...,
`seg_enc.*`, `real_enc.*`, `iter_enc.*` with spectral norm as `weight_orig/_u/_v`, `layer.*`,
`phi.*`, `theta.*`) and `<out>/config.yaml` in the LDM model-zoo layout (plus a `midms:` block).
The latest finished stage is exported: e2e, else warm-up + unet, else unet, else ae; the decoder of
the optional decoder stage replaces the autoencoder's when the run has one. `--unet-from RUN` and
`--decoder-from RUN` take the UNet or the decoder from another run folder on the same autoencoder.
"""
import argparse
import json
import os

import torch
import yaml
from safetensors.torch import save_file

from .colour import GAMUTS, checked_gamut
from .config import CORR_PREFIXES, UNET_PREFIX, corr_kwargs
from .midm import MIDM


def latest_state(run):
    p = lambda n: os.path.join(run, f"midm_{n}.pt")
    load = lambda n: torch.load(p(n), map_location="cpu")
    if os.path.exists(p("e2e")):
        return load("e2e"), "e2e"
    for base in ("unet", "ae"):
        if os.path.exists(p(base)):
            sd = load(base)
            if os.path.exists(p("warmup")):
                sd.update({k: v for k, v in load("warmup").items() if k.startswith(CORR_PREFIXES)})
                return sd, f"{base}+warmup"
            return sd, base
    init = os.path.join(run, "init.pt")  # a run seeded from an export (train.train.seed_run)
    if os.path.exists(init):
        return torch.load(init, map_location="cpu"), "init"
    raise SystemExit(f"no finished stage in {run}")


REGION_KEYS = ("region_matching", "region_open_strokes", "region_keep_outside")
DECODER_PREFIXES = ("diff_model.first_stage_model.decoder.", "diff_model.first_stage_model.post_quant_conv.")


def export(run, out, unet_from=None, decoder_from=None, dtype="f32", state=None, region_matching=None,
           colour_transfer=None, colour_temperature=None, refine_eta=None, keep_outside=None, colour_gamut=None,
           layout_prior=None, colour_layout_prior=None, frame_drawing=None, frame_exemplar=None,
           clear_exemplar_ground=None, close_gaps=None, close_wide_gaps=None):
    """`unet_from`: a run folder (same autoencoder) whose finished unet stage replaces the UNet, width
    included; `decoder_from`: a run folder whose decoder stage supplies the decoder (default: `run`'s
    own, if it has one); `state`: a stage checkpoint of `run` (`<stage>/ckpt.pt` or `best.pt`) to
    export instead of the latest finished stage. `region_matching`: True / False sets
    `midms.region_matching` (an inference setting: ops.restrict_to_regions) and its refinements
    `region_open_strokes` and `region_keep_outside` (ops.target_cells, ops.keep_outside); None keeps
    the run's; `keep_outside`: True / False then sets `region_keep_outside` alone (model v1.10 measured off; shipped on).
    `colour_transfer`: True / False sets `midms.colour_transfer` (train.colour); None keeps the run's.
    `colour_temperature`: a number sets `midms.colour_temperature` (the colour warp's softmax
    temperature, train.midm.MIDM.warp_colour); None keeps the run's. `refine_eta`: a number in [0, 1]
    sets `midms.refine_eta` (the refinement's DDIM eta; absent: the authors' 1). `colour_gamut`: "clip"
    or "scale" sets `midms.colour_gamut` (how a transferred colour outside sRGB comes back,
    train.colour; absent: clip; model v1.11: scale). `layout_prior`: a number >= 0 sets
    `midms.layout_prior` (ops.layout_penalty's weight in the latent matchings; absent: 0, none) and
    `colour_layout_prior` the colour warp's (model v1.13). `frame_drawing`: a share in (0, 1] sets
    `midms.frame_drawing` (a small drawing is framed to that share of the canvas, train.frame;
    model v1.14: 0.875), 0 turns it off; `frame_exemplar` the same for an exemplar's small glyph
    (`midms.frame_exemplar`, train.frame.frame_exemplars; model v1.15: 0.875). `clear_exemplar_ground`:
    True / False sets `midms.clear_exemplar_ground` (an exemplar's plain coloured ground made white,
    ops.clear_plain_ground; model v1.16: on). `close_gaps`: a radius in pixels sets `midms.close_gaps` (a
    gap up to twice it in a drawing's outline is closed, ops.close_plane; model v1.17: 3), 0 turns it off;
    `close_wide_gaps`: [radius, depth] sets `midms.close_wide_gaps` (then a gap up to twice the radius where
    it encloses a part deeper than `depth`; model v1.18: [5, 8]), [] turns it off."""
    cfg = json.load(open(os.path.join(run, "config.json")))
    if region_matching is not None:
        for key in REGION_KEYS:
            cfg["midms"][key] = region_matching
    # Each setting given (not None) replaces the run's, as its key's type.
    given = lambda convert, value: None if value is None else convert(value)
    settings = {"region_keep_outside": keep_outside, "colour_transfer": colour_transfer,
                "colour_temperature": colour_temperature, "refine_eta": refine_eta,
                "colour_gamut": given(checked_gamut, colour_gamut), "layout_prior": given(float, layout_prior),
                "colour_layout_prior": given(float, colour_layout_prior),
                "frame_drawing": given(float, frame_drawing), "frame_exemplar": given(float, frame_exemplar),
                "clear_exemplar_ground": given(bool, clear_exemplar_ground), "close_gaps": given(int, close_gaps),
                "close_wide_gaps": given(lambda v: [int(x) for x in v], close_wide_gaps)}
    cfg["midms"].update({key: value for key, value in settings.items() if value is not None})
    if cfg["midms"].get("close_wide_gaps") == []:
        del cfg["midms"]["close_wide_gaps"]
    if state:
        st = torch.load(state, map_location="cpu")
        sd, which = st["model"], f"{state} (step {st.get('step')})"
    else:
        sd, which = latest_state(run)
    if unet_from:
        ucfg = json.load(open(os.path.join(unet_from, "config.json")))
        cfg["model"]["params"]["unet_config"] = ucfg["model"]["params"]["unet_config"]
        unet = torch.load(os.path.join(unet_from, "midm_unet.pt"), map_location="cpu")
        sd = {k: v for k, v in sd.items() if not k.startswith(UNET_PREFIX)}
        sd.update({k: v for k, v in unet.items() if k.startswith(UNET_PREFIX)})
        which += f"+unet of {unet_from}"
    dec = os.path.join(decoder_from or run, "midm_decoder.pt")
    if os.path.exists(dec):
        # The decoder stage fine-tunes only what follows the codes; every other stage stays valid.
        sd.update({k: v for k, v in torch.load(dec, map_location="cpu").items() if k.startswith(DECODER_PREFIXES)})
        which += f"+decoder of {decoder_from or run}"
    elif decoder_from:
        raise SystemExit(f"{dec} does not exist: run the decoder stage in {decoder_from} first")
    model = MIDM(cfg, **corr_kwargs(cfg))
    model.load_state_dict(sd)
    # f16 halves the file (a GPU lease moves weights both ways); the schedule buffers
    # (`diff_model.betas`, ...) stay f32: 1 - alpha_bar near 1e-5 loses the digits DDIM needs in f16.
    schedule = lambda k: k.startswith("diff_model.") and k.count(".") == 1
    half = lambda k, v: dtype == "f16" and v.is_floating_point() and not schedule(k)
    tensors = {k: (v.detach().half() if half(k, v) else v.detach().float()).contiguous()
               for k, v in model.state_dict().items()}
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt", "stages": which})
    with open(os.path.join(out, "config.yaml"), "w") as f:
        yaml.safe_dump({"model": cfg["model"], "midms": cfg["midms"]}, f, sort_keys=False)
    return which, sum(v.numel() for v in tensors.values())


def load_exported(out="weights"):
    """The exported model as a MIDM module (eval mode)."""
    from safetensors.torch import load_file

    cfg = yaml.safe_load(open(os.path.join(out, "config.yaml")))
    model = MIDM(cfg, **corr_kwargs(cfg))
    model.load_state_dict(load_file(os.path.join(out, "model.safetensors")))
    return model.eval(), cfg


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="train/runs")
    ap.add_argument("--out", default="weights")
    ap.add_argument("--unet-from", default=None, help="run folder whose unet stage replaces the UNet (same autoencoder)")
    ap.add_argument("--decoder-from", default=None, help="run folder whose decoder stage supplies the decoder")
    ap.add_argument("--dtype", choices=["f32", "f16"], default="f32",
                    help="f16: network weights in float16 (half the size; schedule buffers stay float32)")
    ap.add_argument("--state", default=None,
                    help="a stage checkpoint of the run (e.g. RUN/e2e/ckpt.pt, its last step) instead of the finished stage")
    ap.add_argument("--region-matching", choices=["on", "off"], default=None,
                    help="set midms.region_matching (matches kept inside / outside the drawn shape) and its "
                         "refinements region_open_strokes and region_keep_outside; "
                         "default: the run's setting")
    ap.add_argument("--keep-outside", choices=["on", "off"], default=None,
                    help="set midms.region_keep_outside alone (the re-warp kept on every cell outside the drawn "
                         "shape; off: only where the cycle check is confident); default: the run's setting")
    ap.add_argument("--colour-transfer", choices=["on", "off"], default=None,
                    help="set midms.colour_transfer (the exemplar's chroma warped onto the output, train.colour); "
                         "default: the run's setting")
    ap.add_argument("--colour-temperature", type=float, default=None,
                    help="set midms.colour_temperature (the colour warp's softmax temperature; absent: the "
                         "matching's 0.005); default: the run's setting")
    ap.add_argument("--refine-eta", type=float, default=None,
                    help="set midms.refine_eta (the refinement's DDIM eta: 0 deterministic; absent: the authors' 1); "
                         "default: the run's setting")
    ap.add_argument("--colour-gamut", choices=list(GAMUTS), default=None,
                    help="set midms.colour_gamut (a transferred colour outside sRGB: clip each channel, or scale "
                         "linear RGB down, keeping the hue; absent: clip); default: the run's setting")
    ap.add_argument("--layout-prior", type=float, default=None,
                    help="set midms.layout_prior (with region matching, a cell inside the drawn shape prefers the "
                         "exemplar's part at the same place within its shape, in the latent matchings; 0: none); "
                         "default: the run's setting")
    ap.add_argument("--colour-layout-prior", type=float, default=None,
                    help="set midms.colour_layout_prior (the same prior in the colour warp); default: the run's setting")
    ap.add_argument("--frame-drawing", type=float, default=None,
                    help="set midms.frame_drawing (a drawing whose box is small is scaled up to this share of the "
                         "canvas, translated, and mapped back; 0: off); default: the run's setting")
    ap.add_argument("--frame-exemplar", type=float, default=None,
                    help="set midms.frame_exemplar (an exemplar whose glyph is small is scaled up to this share of "
                         "its image before anything is made of it; 0: off); default: the run's setting")
    ap.add_argument("--clear-exemplar-ground", choices=["on", "off"], default=None,
                    help="set midms.clear_exemplar_ground (an exemplar's plain coloured ground is made white "
                         "before anything is made of it); default: the run's setting")
    ap.add_argument("--close-wide-gaps", type=int, nargs="*", default=None, metavar="N",
                    help="set midms.close_wide_gaps to RADIUS DEPTH (then a gap up to twice RADIUS px is closed where "
                         "it encloses a part deeper than DEPTH px; no values: off); default: the run's setting")
    ap.add_argument("--close-gaps", type=int, default=None,
                    help="set midms.close_gaps (a gap up to twice this many pixels in a drawing's outline is closed "
                         "before anything is made of the drawing; 0: off); default: the run's setting")
    a = ap.parse_args()
    rm = None if a.region_matching is None else a.region_matching == "on"
    ct = None if a.colour_transfer is None else a.colour_transfer == "on"
    ko = None if a.keep_outside is None else a.keep_outside == "on"
    which, n = export(a.run, a.out, a.unet_from, a.decoder_from, a.dtype, a.state, rm, ct, a.colour_temperature,
                      a.refine_eta, ko, a.colour_gamut, a.layout_prior, a.colour_layout_prior,
                      a.frame_drawing, a.frame_exemplar,
                      None if a.clear_exemplar_ground is None else a.clear_exemplar_ground == "on", a.close_gaps,
                      a.close_wide_gaps)
    print(f"exported stages [{which}] ({n / 1e6:.2f} M values) to {a.out}/model.safetensors and config.yaml")


if __name__ == "__main__":
    main()
