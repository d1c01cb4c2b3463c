"""The MIDMs module: LDM (VQ autoencoder + UNet + DDPM buffers) and the correspondence networks,
with the canonical state_dict key names, and the inference loop exactly as the reference."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .autoencoder import VQModel
from .colour import checked_gamut, colour_source, transfer_colour
from .frame import checked_share, frame_exemplars, frame_labels, unframe
from .correspondence import build_correspondence
from .ops import (TEMPERATURE, clear_plain_ground, close_gaps, correlation, downsample_label, exemplar_foreground,
                  fb_mask, fbcheck, feature_normalize, fill_outside, get_flow, keep_outside, region_cells,
                  restrict_to_regions, seg_input, soft_warp, target_cells, to_device)
from .unet import UNetModel

# Input channels a UNet with `midms.unet_condition` takes beside the latent: the drawing's lines and
# its filled shape on the latent grid (MIDM.unet_cond).
UNET_CONDITION_CHANNELS = 2

SCHEDULE_BUFFERS = [
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
]


def ddpm_schedule(timesteps=1000, linear_start=0.0015, linear_end=0.0195):
    """LDM register_schedule in float64, returned as float32 tensors."""
    betas = np.linspace(linear_start ** 0.5, linear_end ** 0.5, timesteps, dtype=np.float64) ** 2
    alphas = 1.0 - betas
    acp = np.cumprod(alphas, axis=0)
    acp_prev = np.append(1.0, acp[:-1])
    post_var = betas * (1.0 - acp_prev) / (1.0 - acp)
    s = {
        "betas": betas, "alphas_cumprod": acp, "alphas_cumprod_prev": acp_prev,
        "sqrt_alphas_cumprod": np.sqrt(acp), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - acp),
        "log_one_minus_alphas_cumprod": np.log(1.0 - acp), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / acp),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / acp - 1), "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(acp_prev) / (1.0 - acp),
        "posterior_mean_coef2": (1.0 - acp_prev) * np.sqrt(alphas) / (1.0 - acp),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in s.items()}


class DdimSchedule:
    """DDIM make_schedule (uniform) from the float32 alphas_cumprod buffer."""

    def __init__(self, alphas_cumprod, num_steps, eta, num_timesteps=1000):
        c = num_timesteps // num_steps
        self.timesteps = np.asarray(list(range(0, num_timesteps, c))) + 1
        acp = alphas_cumprod.detach().cpu()
        self.alphas = acp[self.timesteps].clone()
        prev = np.asarray([acp[0].item()] + acp[self.timesteps[:-1]].tolist())
        a64 = self.alphas.double().numpy()
        self.alphas_prev = torch.tensor(prev, dtype=torch.float32)
        sig = eta * np.sqrt((1 - prev) / (1 - a64) * (1 - a64 / prev))
        self.sigmas = torch.tensor(sig, dtype=torch.float32)
        self.sqrt_one_minus_alphas = torch.sqrt(1.0 - self.alphas)
        self.time_range = self.timesteps[::-1].copy()
        self.total_steps = len(self.timesteps)


class DiffusionWrapper(nn.Module):
    def __init__(self, unet):
        super().__init__()
        self.diffusion_model = unet


class LatentDiffusion(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        p = cfg["model"]["params"]
        fs = p["first_stage_config"]["params"]
        self.first_stage_model = VQModel(fs["embed_dim"], fs["n_embed"], fs["ddconfig"])
        self.model = DiffusionWrapper(UNetModel(**p["unet_config"]["params"]))
        self.num_timesteps = p["timesteps"]
        self._ddim_schedules = {}  # (steps, eta) -> DdimSchedule, see ddim_schedule
        for k, v in ddpm_schedule(p["timesteps"], p["linear_start"], p["linear_end"]).items():
            self.register_buffer(k, v)

    def ddim_schedule(self, steps, eta=0.0):
        """The DDIM schedule of `steps` steps, made once per (steps, eta) and kept: making one reads
        `alphas_cumprod` back to the host, which on a GPU waits for every queued kernel. The
        buffer is fixed by the config (`ddpm_schedule`), so a kept schedule never goes stale."""
        key = (int(steps), float(eta))
        if key not in self._ddim_schedules:
            self._ddim_schedules[key] = DdimSchedule(self.alphas_cumprod, steps, eta, self.num_timesteps)
        return self._ddim_schedules[key]

    def q_sample(self, x0, t, noise):
        a = self.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1)
        b = self.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
        return a * x0 + b * noise

    def eps(self, x, t, cond=None):
        """`cond`: the drawing on the latent grid, the extra input channels of a UNet with
        `midms.unet_condition` (MIDM.unet_cond); None for the authors' unconditional UNet."""
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], 1)
        return self.model.diffusion_model(x, t)


def ddim_step(diff, sched, x, index, t_val, noise=None, trace=None, prefix=None, cond=None):
    """One DDIM step (p_sample_ddim). Returns (x_prev, pred_x0, a_prev_sqrt, dir_xt). `cond`: the
    UNet's condition channels (LatentDiffusion.eps)."""
    b = x.shape[0]
    t = torch.full((b,), int(t_val), dtype=torch.long, device=x.device)
    e = diff.eps(x, t, cond)
    # The schedule's values stay 0-dim CPU tensors, which CUDA ops take as scalars (the same float32
    # values): copied to the GPU, each would wait for the queued kernels.
    a_t = sched.alphas[index]
    a_prev = sched.alphas_prev[index]
    sigma = sched.sigmas[index]
    som = sched.sqrt_one_minus_alphas[index]
    pred_x0 = (x - som * e) / a_t.sqrt()
    dir_xt = (1.0 - a_prev - sigma ** 2).sqrt() * e
    if noise is None:
        noise = torch.randn_like(x)
    x_prev = a_prev.sqrt() * pred_x0 + dir_xt + sigma * noise
    if trace is not None:
        trace.update({f"{prefix}.eps": e, f"{prefix}.pred_x0": pred_x0, f"{prefix}.dir_xt": dir_xt,
                      f"{prefix}.x_prev": x_prev, f"{prefix}.x_in": x, f"{prefix}.t": t,
                      f"{prefix}.a_prev_sqrt": a_prev.sqrt().expand(b).clone(),
                      f"{prefix}.index": torch.tensor([index], dtype=torch.long)})
    return x_prev, pred_x0, a_prev.sqrt(), dir_xt


class MIDM(nn.Module):
    def __init__(self, ldm_cfg, label_nc=1, n_ch=32, ndf=8, spade_nhidden=16, label_fill=False):
        super().__init__()
        self.diff_model = LatentDiffusion(ldm_cfg)
        fs = ldm_cfg["model"]["params"]["first_stage_config"]["params"]
        self.label_nc = label_nc
        # Not in the authors' code: "max" for our models that set it (ops.downsample_label).
        self.label_downsample = ldm_cfg.get("midms", {}).get("label_downsample", "nearest")
        # Not in the authors' code either: seg_enc also sees the filled drawing (ops.seg_input).
        self.label_fill = label_fill
        # Not in the authors' code: matching kept inside / outside the drawn shape (ops.restrict_to_regions).
        self.region_matching = bool(ldm_cfg.get("midms", {}).get("region_matching", False))
        # Its refinements (model v1.5): open strokes count as inside (ops.target_cells), and the
        # re-warp is kept on every cell outside the drawn shape (ops.keep_outside).
        self.region_open_strokes = bool(ldm_cfg.get("midms", {}).get("region_open_strokes", False))
        self.region_keep_outside = bool(ldm_cfg.get("midms", {}).get("region_keep_outside", False))
        if (self.region_open_strokes or self.region_keep_outside) and not self.region_matching:
            raise ValueError("midms.region_open_strokes / region_keep_outside need midms.region_matching")
        # And a layout prior (model v1.13, ops.layout_penalty): a cell inside the drawn shape prefers
        # the exemplar's part at the same place within its shape. Without it a cell takes the
        # colour of whatever part its features match best, and a house came out as a patchwork of
        # roof, wall and window colours. Two weights: the latent matchings' (the initial warp and
        # the re-matchings) and the colour warp's (`colour_layout_prior`, from the same first
        # correlation); each absent is 0. Measured in docs/model-history.md, model v1.13.
        for key in ("layout_prior", "colour_layout_prior"):
            weight = float(ldm_cfg.get("midms", {}).get(key, 0.0))
            if not (weight >= 0 and np.isfinite(weight)):
                raise ValueError(f"midms.{key} must be a finite number >= 0, not {weight}")
            if weight and not self.region_matching:
                raise ValueError(f"midms.{key} needs midms.region_matching")
            setattr(self, key, weight)
        # With it, the latent of a white background that cells outside the sketch take when the
        # exemplar has no outside (ops.fill_outside; train.background computes it).
        bg = ldm_cfg.get("midms", {}).get("background_latent")
        self.background_latent = None if bg is None else [float(v) for v in bg]
        self._background = {}  # (device, dtype) -> that latent as a tensor, made once
        # A small drawing is framed (model v1.14, train.frame): scaled up to this share of the
        # canvas about its box's centre, translated, and its output mapped back; absent: 0, off.
        self.frame_drawing = checked_share(ldm_cfg.get("midms", {}).get("frame_drawing"), label_nc)
        # A drawing's small gaps closed (model v1.17, ops.close_plane): a disc radius in pixels; absent: 0, off.
        radius = ldm_cfg.get("midms", {}).get("close_gaps", 0) or 0
        if isinstance(radius, bool) or not (isinstance(radius, int) and 0 <= radius <= 16):
            raise ValueError(f"midms.close_gaps must be a whole number of pixels from 0 (off) to 16, not {radius!r}")
        if radius and label_nc != 1:
            raise ValueError(f"midms.close_gaps needs a one-channel line label, the model has {label_nc} channels")
        self.close_gaps = radius
        # And wider gaps (model v1.18): [radius, depth], a gap up to 2 * radius px closed where it encloses a
        # part deeper than `depth` (a large region, not a notch between open strokes); absent: off.
        wide = ldm_cfg.get("midms", {}).get("close_wide_gaps")
        pixels = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 16
        if wide and not (isinstance(wide, (list, tuple)) and len(wide) == 2 and all(map(pixels, wide))):
            raise ValueError(f"midms.close_wide_gaps must be [radius, depth], whole pixels from 1 to 16, not {wide!r}")
        if wide and label_nc != 1:
            raise ValueError(f"midms.close_wide_gaps needs a one-channel line label, the model has {label_nc} channels")
        self.close_wide_gaps = tuple(wide) if wide else None
        # An exemplar's plain coloured ground made white (model v1.16, ops.clear_plain_ground); absent: off.
        self.clear_exemplar_ground = bool(ldm_cfg.get("midms", {}).get("clear_exemplar_ground", False))
        # And a small exemplar glyph (model v1.15, train.frame.frame_exemplars), with nothing to map back.
        self.frame_exemplar = checked_share(ldm_cfg.get("midms", {}).get("frame_exemplar"), label_nc,
                                            "frame_exemplar")
        # Not in the authors' code (model v1.6): the exemplar's chroma warped by the first matching
        # onto the decoded output (train.colour).
        self.colour_transfer = bool(ldm_cfg.get("midms", {}).get("colour_transfer", False))
        # Its own softmax temperature (model v1.7): sharper than the latent warp's, so that a cell
        # takes the chroma of the exemplar parts it matches best instead of a grey-ish average of
        # all it half-matches (hand-drawn a*b* colour 0.701 at the matching's 0.005, 0.767 at
        # 0.00125, 0.788 at hard argmax, seed 0). Absent: the matching's temperature (model v1.6).
        # The refinement's DDIM eta (model v1.8; absent: the authors' 1, a stochastic pass). At 0
        # the pass is deterministic: the stochastic one's fresh noise at each of its 20 steps is
        # smoothed away by this small UNet together with thin strokes (hand-drawn chamfer 1.61 ->
        # 1.48, seed 0; held-out SWD 67.9 -> 67.8).
        self.refine_eta = float(ldm_cfg.get("midms", {}).get("refine_eta", 1.0))
        if not 0 <= self.refine_eta <= 1:
            raise ValueError(f"midms.refine_eta must lie in [0, 1], not {self.refine_eta}")
        # How a transferred chroma outside sRGB comes back (model v1.11; absent: "clip", train.colour).
        self.colour_gamut = checked_gamut(ldm_cfg.get("midms", {}).get("colour_gamut", "clip"))
        ct = ldm_cfg.get("midms", {}).get("colour_temperature")
        self.colour_temperature = TEMPERATURE if ct is None else float(ct)
        if not self.colour_temperature > 0:
            raise ValueError(f"midms.colour_temperature must be positive, not {ct}")
        # Not in the authors' code (model v1.9): the UNet also sees the drawing, on the latent grid as
        # seg_enc does (the max-pooled lines and the filled shape: ops.seg_input with the fill), as
        # UNET_CONDITION_CHANNELS extra input channels. The authors' UNet is unconditional: the
        # sketch reaches the output only through the warp, and the denoiser smoothed away what the
        # warp put on thin strokes (hand-drawn chamfer 1.52 px against the warp's own 1.31).
        self.unet_condition = bool(ldm_cfg.get("midms", {}).get("unet_condition", False))
        if self.unet_condition:
            want = fs["embed_dim"] + UNET_CONDITION_CHANNELS
            got = ldm_cfg["model"]["params"]["unet_config"]["params"]["in_channels"]
            if not label_fill or label_nc != 1 or got != want:
                raise ValueError(f"midms.unet_condition needs label_fill, label_nc 1 and a UNet with in_channels "
                                 f"{want} (latent + line + fill), not label_fill {label_fill}, label_nc {label_nc}, "
                                 f"in_channels {got}")
        build_correspondence(self, fs["embed_dim"], label_nc, n_ch, ndf, spade_nhidden, label_fill)

    @property
    def ae(self):
        return self.diff_model.first_stage_model

    def unet_cond(self, label, hw, filled=None):
        """The UNet's condition channels for `label` on the latent grid `hw` (a model with
        `unet_condition`), else None: seg_enc's input (lines max-pooled or sampled as the model's
        `label_downsample` says, and the filled shape area-averaged)."""
        if not self.unet_condition:
            return None
        return seg_input(label, hw, self.label_downsample, True, filled)[0]

    # ---- correspondence -------------------------------------------------------------------
    def exemplar_shape(self, ref_img):
        """`ops.exemplar_foreground` of `ref_img` where region matching or colour transfer needs it,
        else None: flood-filled once per translation and passed to both."""
        return exemplar_foreground(ref_img) if self.region_matching or self.colour_transfer else None

    def prepared_drawing(self, label, trace=None):
        """(the drawing as the model translates it, each item's frame or None): its gaps closed where
        the model closes them (`midms.close_gaps`, then `midms.close_wide_gaps`), then framed where it
        is small and the model frames drawings (`midms.frame_drawing`)."""
        closed = label
        if self.close_gaps:
            closed = close_gaps(closed, self.close_gaps)
        if self.close_wide_gaps:
            closed = close_gaps(closed, *self.close_wide_gaps)
        if trace is not None and not torch.equal(closed, label):
            trace["gaps.cond_label"] = closed
        label = closed
        frames = None
        if self.frame_drawing:
            label, frames = frame_labels(label, self.frame_drawing)
            if trace is not None and any(f is not None for f in frames):
                trace["frame.cond_label"] = label
        return label, frames

    def prepared_exemplar(self, ref_img, ref_label, trace=None):
        """(exemplar, its label, `exemplar_shape` of it), a plain coloured ground made white where the
        model clears one (`midms.clear_exemplar_ground`) and then a small glyph framed where it frames
        exemplars (`midms.frame_exemplar`): everything after is made of that exemplar."""
        if self.clear_exemplar_ground:
            ref_img, cleared = clear_plain_ground(ref_img)
            if trace is not None and any(cleared):
                trace["ground.ref_img"] = ref_img
        fg = self.exemplar_shape(ref_img)
        if not self.frame_exemplar:
            return ref_img, ref_label, fg
        shape = exemplar_foreground(ref_img) if fg is None else fg
        ref_img, ref_label, frames = frame_exemplars(ref_img, ref_label, shape, self.frame_exemplar)
        if any(f is not None for f in frames):
            fg = self.exemplar_shape(ref_img)
            if trace is not None:
                trace["frame.ref_img"], trace["frame.ref_label"] = ref_img, ref_label
        return ref_img, ref_label, fg

    def regions(self, label, ref_img, hw, foreground=None):
        """(target, exemplar) region cells on the latent grid `hw` for a model with
        `region_matching`, else None. `foreground`: `self.exemplar_shape(ref_img)`, if made."""
        if not self.region_matching:
            return None
        fg = exemplar_foreground(ref_img) if foreground is None else foreground
        return (target_cells(label, hw, open_strokes=self.region_open_strokes), region_cells(fg, hw))

    def condition_feats(self, seg_in, label_ds, trace=None):
        """F_X on the condition: (seg_enc's features, the shared layer's output, theta's normalised
        matching features). `seg_in`, `label_ds`: `ops.seg_input`'s pair."""
        m = self.seg_enc(seg_in, trace=trace, name="seg_enc")
        lo = self.layer(torch.cat([m, label_ds], 1))
        return m, lo, feature_normalize(self.theta(lo))

    def exemplar_feats(self, feats, label_ds):
        """F_Y on an autoencoder latent `feats` with its downsampled label: (real_enc's features, the
        shared layer's output, phi's normalised matching features)."""
        m = self.real_enc(feats)
        lo = self.layer(torch.cat([m, label_ds], 1))
        return m, lo, feature_normalize(self.phi(lo))

    def match(self, label, ref_feats, ref_label, trace=None, regions=None):
        """Initial matching. Returns dict with trg/ref matching feats, corr_ref, warped_ref_feat.
        `regions`: `self.regions(...)`, the restriction of region matching (None: none)."""
        hw = ref_feats.shape[2:]
        seg_in, label_ds = seg_input(label, hw, self.label_downsample, self.label_fill)
        ref_label_ds = downsample_label(ref_label, hw, self.label_downsample)
        trg_m, trg_lo, trg_out = self.condition_feats(seg_in, label_ds, trace)
        ref_m, ref_lo, ref_out = self.exemplar_feats(ref_feats, ref_label_ds)
        raw = corr = colour_corr = correlation(trg_out, ref_out)
        if regions is not None:
            corr = colour_corr = restrict_to_regions(raw, *regions, layout=self.layout_prior)
            if self.colour_layout_prior != self.layout_prior:  # the colour warp's own restriction
                colour_corr = restrict_to_regions(raw, *regions, layout=self.colour_layout_prior)
            if trace is not None:
                trace["corr.region_trg"], trace["corr.region_ref"] = regions
        warped = self.fill_outside(soft_warp(ref_feats, corr), regions)
        if trace is not None:
            if self.label_fill:
                trace["corr.cond_seg_in"] = seg_in
            trace.update({
                "corr.cond_label_ds": label_ds, "corr.exemplar_label_ds": ref_label_ds,
                "corr.trg_matching_feats": trg_m, "corr.ref_matching_feats": ref_m,
                "corr.trg_layer0_out": self.layer[0](torch.cat([trg_m, label_ds], 1)),
                "corr.trg_layer_out": trg_lo, "corr.ref_layer_out": ref_lo,
                "corr.trg_out": trg_out, "corr.ref_out": ref_out, "corr.corr_ref": corr,
                "corr.warped_ref_feat": warped, "corr.ref_feats": ref_feats,
            })
        return {"seg_in": seg_in, "label_ds": label_ds, "ref_label_ds": ref_label_ds, "trg_m": trg_m, "ref_m": ref_m,
                "trg_out": trg_out, "ref_out": ref_out, "corr": corr, "colour_corr": colour_corr, "warped": warped}

    def rematch(self, x0, trg_m, ref_m, ref_feats, regions=None):
        """Re-matching from the current x0 estimate (iter_enc). Returns (x0_new, corr_inter, iter_feat)."""
        f = feature_normalize(self.iter_enc(x0, seg=trg_m))
        r = feature_normalize(ref_m)
        corr = correlation(f, r)
        if regions is not None:
            corr = restrict_to_regions(corr, *regions, layout=self.layout_prior)
        return self.fill_outside(soft_warp(ref_feats, corr), regions), corr, f, r

    def confidence(self, fb_ts, regions=None):
        """(the cycle check's mask, the mask the re-warp is mixed with): the same, except for a model
        with `region_keep_outside`, whose cells outside the drawn shape keep the re-warp."""
        mask = fb_mask(fb_ts)
        if regions is None or not self.region_keep_outside:
            return mask, mask
        return mask, keep_outside(mask, *regions, self.background_latent)

    def warp_colour(self, ref_img, corr, regions, foreground=None):
        """The exemplar's chroma (`colour.colour_source`) warped by the softmax weights of `corr` at
        `midms.colour_temperature`; none on the cells where the latent warp puts the background
        latent (`fill_outside`). `foreground`: `self.exemplar_shape(ref_img)`, if made."""
        fg = exemplar_foreground(ref_img) if foreground is None else foreground
        warped = soft_warp(colour_source(ref_img, fg, corr.shape[-2:]), corr, self.colour_temperature)
        if regions is None or self.background_latent is None:
            return warped
        return fill_outside(warped, *regions, warped.new_zeros(warped.shape[1]))

    def fill_outside(self, warped, regions):
        if regions is None or self.background_latent is None:
            return warped
        # Made once per device: from the Python list on every warp it was a host-to-device copy,
        # a host round trip, in every GPU training step.
        key = (warped.device, warped.dtype)
        if key not in self._background:
            self._background[key] = torch.tensor(self.background_latent, dtype=warped.dtype, device=warped.device)
        return fill_outside(warped, *regions, self._background[key])

    # ---- inference ------------------------------------------------------------------------
    @torch.no_grad()
    def translate(self, label, ref_img, ref_label, steps=16, t_list=None, rewarp_at=(1, 2), use_mask=True,
                  refine=True, refine_steps=200, refine_hijack=180, noises=None, trace=None, generator=None,
                  start_latent=None, colour=True):
        """MIDM inference (section 5-6 of the parity README). `noises` injects the used draws:
        {'loop.0.q_noise', 'refine.q_noise', 'refine.noise' [n, B, C, h, w]}. `start_latent` replaces
        the warped exemplar the loop starts from (evaluation: the target's own latent measures what
        the diffusion stages do to a perfect warp). `colour=False` leaves out the colour transfer of a
        model with `colour_transfer` (the ablation)."""
        diff = self.diff_model
        noises = noises or {}
        frames = None
        # A drawing's gaps closed and a small one framed (train.frame); not from a given start latent,
        # which lies on the canvas (the evaluation's from-target row).
        if start_latent is None:
            label, frames = self.prepared_drawing(label, trace)

        def randn(shape_like, key, j=None):
            if key in noises:
                return noises[key] if j is None else noises[key][j]
            # Drawn on the generator's device (CPU by default), so CPU and GPU runs get the same noise.
            dev = generator.device if generator is not None else shape_like.device
            return to_device(torch.randn(shape_like.shape, generator=generator, device=dev), shape_like.device)

        ref_img, ref_label, fg = self.prepared_exemplar(ref_img, ref_label, trace)
        ref_feats = self.ae.encode(ref_img)
        regions = self.regions(label, ref_img, ref_feats.shape[2:], fg)
        m = self.match(label, ref_feats, ref_label, trace=trace, regions=regions)
        colour_warped = None
        if self.colour_transfer and colour:  # by the first matching (train.colour)
            colour_warped = self.warp_colour(ref_img, m["colour_corr"], regions, fg)
        if trace is not None:
            fl = get_flow(m["corr"])
            for k, v in zip(["map_trg", "map_src", "flow_trg", "flow_src"], fl):
                trace[f"flow_ref.{k}"] = v
            fb_ts, fb_st = fbcheck(*fl)
            trace["flow_ref.fb_ts"], trace["flow_ref.fb_st"] = fb_ts, fb_st
            trace["flow_ref.fb_mask"] = fb_mask(fb_ts, trace, "flow_ref")
        # The UNet's condition is seg_enc's input (unet_cond), made once by the matching.
        cond = m["seg_in"] if self.unet_condition else None
        if trace is not None and cond is not None:
            trace["unet.cond"] = cond
        sched = diff.ddim_schedule(steps)
        if t_list is None:
            t_list = [steps * 3 // 4 + i for i in range(steps // 4)]
        x0 = m["warped"] if start_latent is None else start_latent
        param = None
        mask = None
        b = x0.shape[0]
        for k, s in enumerate(t_list):
            p = f"loop.{k}"
            if k in rewarp_at:
                x0_new, corr_i, f, r = self.rematch(x0, m["trg_m"], m["ref_m"], ref_feats, regions)
                fl = get_flow(corr_i)
                fb_ts = fbcheck(*fl)[0]
                cycle, mask = self.confidence(fb_ts, regions)
                x0 = x0_new * mask + x0 * (1 - mask) if use_mask else x0_new
                if trace is not None:
                    trace.update({f"{p}.iter_feat": f, "loop.inter_ref_feat": r, f"{p}.pred_ref_x0_new": x0_new,
                                  f"{p}.fb_ts": fb_ts, f"{p}.fb_mask": cycle})
                    if mask is not cycle:
                        trace[f"{p}.mask_kept"] = mask
                    for kk, v in zip(["map_trg", "map_src", "flow_trg", "flow_src"], fl):
                        trace[f"{p}.{kk}"] = v
            if trace is not None:
                trace[f"{p}.hijack_feat"] = x0
            if param is None:
                q_t = int(sched.time_range[s - 1])
                qn = randn(x0, f"{p}.q_noise")
                x = diff.q_sample(x0, torch.full((b,), q_t, dtype=torch.long, device=x0.device), qn)
                if trace is not None:
                    trace[f"{p}.q_noise"], trace[f"{p}.q_t"] = qn, torch.full((b,), q_t, dtype=torch.long)
            else:
                x = param[0] * x0 + param[1]
            index = sched.total_steps - s - 1
            _, x0, a_prev_sqrt, dir_xt = ddim_step(diff, sched, x, index, sched.time_range[s],
                                                   noise=torch.zeros_like(x), trace=trace, prefix=p, cond=cond)
            param = (a_prev_sqrt, dir_xt)
        if trace is not None:
            trace["loop.t_list"] = torch.tensor(t_list, dtype=torch.long)
            if mask is not None:
                trace["out.fb_mask"] = mask
        if refine:
            x0 = self.refine(x0, refine_steps, refine_hijack, randn, trace, cond)
        out = self.ae.decode(x0)
        if colour_warped is not None:
            if trace is not None:
                trace["out.decoded"], trace["out.colour_warped"] = out, colour_warped
            out = transfer_colour(out, colour_warped, self.colour_gamut)
        if frames is not None and any(f is not None for f in frames):
            if trace is not None:
                trace["out.framed"] = out
            out = unframe(out, frames)
        if trace is not None:
            trace["out.final_quant_indices"] = self.ae.quantize.indices(x0)
            trace["out.warped_ref"] = out
        return out, mask

    def refine(self, x0, steps, hijack, randn, trace=None, cond=None):
        diff = self.diff_model
        sched = diff.ddim_schedule(steps, self.refine_eta)
        b = x0.shape[0]
        q_t = int(sched.time_range[hijack - 1])
        qn = randn(x0, "refine.q_noise")
        x = diff.q_sample(x0, torch.full((b,), q_t, dtype=torch.long, device=x0.device), qn)
        rec = {"x_in": [], "noise": [], "t": [], "index": [], "sigma": []}
        if trace is not None:
            trace.update({"refine.hijack_feat": x0, "refine.q_noise": qn, "refine.x_start": x,
                          "refine.q_t": torch.full((b,), q_t, dtype=torch.long)})
        pred = x0
        for j, i in enumerate(range(hijack, steps)):
            index = steps - i - 1
            z = randn(x, "refine.noise", j)
            rec["x_in"].append(x)
            rec["noise"].append(z)
            rec["t"].append(int(sched.time_range[i]))
            rec["index"].append(index)
            rec["sigma"].append(sched.sigmas[index])
            x, pred, _, _ = ddim_step(diff, sched, x, index, sched.time_range[i], noise=z, cond=cond)
        if trace is not None:
            trace.update({"refine.x_in": torch.stack(rec["x_in"]), "refine.noise": torch.stack(rec["noise"]),
                          "refine.t": torch.tensor(rec["t"], dtype=torch.long),
                          "refine.index": torch.tensor(rec["index"], dtype=torch.long),
                          "refine.sigma": torch.stack(rec["sigma"]), "refine.final_latent": pred})
        return pred
