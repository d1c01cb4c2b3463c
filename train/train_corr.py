"""Stage 3: correspondence warm-up, then end-to-end fine-tuning (MIDMs `e2e_recurrent` training).

Warm-up (step < warmup): the UNet is frozen and no diffusion step is taken: the correspondence
networks learn from L_dom, L_cycle, L_src, L_perc and the self-warp term of L_diff
(MSE(warp(src latent), src latent)). After warm-up, the UNet is unfrozen and each step runs the
recurrent matching-diffusion loop of the paper with 8 DDIM steps and t_list = [6, 7] (two
interleaved steps, re-matching with iter_enc before the second), adds L_style (contextual) and the
one-step denoising term of L_diff.
"""
import os
import random

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from . import losses as L
from .common import Clock, Dist, GuardedStep, Logger, WeightEma, adam, autocast, edge_to_pm1, randn, save_grid
from .config import CORR_NETS
from .midm import ddim_step
from .ops import (correlation, downsample_label, exemplar_foreground, fbcheck, get_flow, region_cells,
                  restrict_to_regions, seg_input, soft_warp, target_cells)

TRAIN_DDIM_STEPS = 8


def one_step(diff, sched, x0, s, param, g, cond=None):
    """The reference's one_step_sample with a hijacked x0 (eta = 0); differentiable. `cond`: the
    drawing for a UNet with `midms.unet_condition` (MIDM.unet_cond)."""
    b = x0.shape[0]
    if param is None:
        t = torch.full((b,), int(sched.time_range[s - 1]), dtype=torch.long, device=x0.device)
        x = diff.q_sample(x0, t, randn(x0.shape, g, x0.device))
    else:
        x = param[0] * x0 + param[1]
    index = sched.total_steps - s - 1
    _, pred, a_prev_sqrt, dir_xt = ddim_step(diff, sched, x, index, sched.time_range[s], noise=torch.zeros_like(x),
                                             cond=cond)
    return pred, (a_prev_sqrt, dir_xt)


def training_regions(model, batch, hw):
    """(source, exemplar) region cells for a model with `region_matching`, else (None, None): the
    matching networks learn under the restriction the sampler applies. The filled drawing and the
    images' shapes come with the batch (train.pairs makes them in its worker processes: on a GPU
    they would cost a host round trip a step); computed here for batches without them."""
    if not model.region_matching:
        return None, None
    inside = batch.get("fill")
    t = target_cells(batch["edge"], hw, None if inside is None else inside.to(batch["edge"].device),
                     open_strokes=model.region_open_strokes)
    shape = lambda key, img: region_cells(
        exemplar_foreground(img) if batch.get(key) is None else batch[key].to(img.device), hw)
    return (t, shape("src_fg", batch["image"])), (t, shape("ref_fg", batch["ref"]))


def forward_train(model, batch, warm, g, iter_align=0.0, w_perc=L.W_PERC, w_style=L.W_STYLE, vgg=None,
                  warm_iter=0.0, w_colour=0.0):
    """One training step's losses. `iter_align` > 0 adds an L_dom-like term (not in the paper)
    that keeps F_Y^iter's features of the target latent aligned with F_Y's: without it, a
    an early (2026-11-26) end-to-end run ended with every re-matching cosine negative, which the clamped
    correlation turns into a uniform, gradient-free match. `w_perc`, `w_style`: the weights of
    L_perc and L_style (default: the paper's; losses.py says why the shipped model changes them).
    `vgg`: a frozen `vgg.VGGFeatures` for L_perc and L_style (`--features vgg`); None: the
    autoencoder's features, as before. L_src keeps the autoencoder's features either way.
    `warm_iter` > 0 trains F_Y^iter in the warm-up too (weight of its alignment term). `w_colour` > 0
    adds losses.colour_loss between the translation and the target (not in the paper)."""
    diff = model.diff_model
    ae = model.ae
    src, ref = batch["image"], batch["ref"]
    label, ref_label = batch["edge"], batch["ref_edge"]
    with torch.no_grad():
        src_feats = ae.encode(src)
        ref_feats = ae.encode(ref)
    hw = src_feats.shape[2:]
    seg_in, label_ds = seg_input(label, hw, model.label_downsample, model.label_fill, batch.get("fill"))
    ref_label_ds = downsample_label(ref_label, hw, model.label_downsample)
    trg_m, _, trg_out = model.condition_feats(seg_in, label_ds)
    src_m, _, src_out = model.exemplar_feats(src_feats, label_ds)
    ref_m, _, ref_out = model.exemplar_feats(ref_feats, ref_label_ds)
    corr_src = correlation(trg_out, src_out)
    corr_ref = correlation(trg_out, ref_out)
    regions_src, regions_ref = training_regions(model, batch, hw)
    if regions_ref is not None:
        corr_src = restrict_to_regions(corr_src, *regions_src)
        corr_ref = restrict_to_regions(corr_ref, *regions_ref)
    warped_src_feat = model.fill_outside(soft_warp(src_feats, corr_src), regions_src)
    warped_ref_feat = model.fill_outside(soft_warp(ref_feats, corr_ref), regions_ref)
    out = {}
    l_cycle = L.cycle_loss(ref_feats, corr_ref)
    l_iter = torch.zeros((), device=src.device)
    if warm:
        l_diff = F.mse_loss(warped_src_feat, src_feats)
        pred_ref, pred_src = warped_ref_feat, warped_src_feat
        l_cycle = l_cycle + F.l1_loss(soft_warp(warped_ref_feat, corr_ref.permute(0, 3, 4, 1, 2)), ref_feats)
        if warm_iter > 0:
            # F_Y^iter trained from the start (the authors' warm-up leaves it to e2e): re-match the
            # warp, as the first interleaved step will, with its own cycle term, and keep its
            # features of the target latent aligned with F_Y's.
            new_ref, ci, _, _ = model.rematch(warped_ref_feat, trg_m, ref_m, ref_feats, regions_ref)
            l_cycle = l_cycle + F.l1_loss(soft_warp(new_ref, ci.permute(0, 3, 4, 1, 2)), ref_feats)
            l_iter = L.domain_loss(model.iter_enc(src_feats, seg=trg_m), src_m, ref_m)
            pred_ref = 0.5 * (warped_ref_feat + new_ref)
    else:
        sched = diff.ddim_schedule(TRAIN_DDIM_STEPS)
        q = TRAIN_DDIM_STEPS // 4
        t_list = [3 * q + i for i in range(q)]
        rand_idx = random.randrange(len(t_list))
        pred_ref, pred_src = warped_ref_feat, warped_src_feat
        p_ref = p_src = None
        l_diff = 0.0
        # A UNet that sees the drawing gets seg_enc's input (MIDM.unet_cond), on both sides.
        cond = seg_in if model.unet_condition else None
        for k, s in enumerate(t_list):
            if k in (1, 2):
                new_ref, ci, _, _ = model.rematch(pred_ref, trg_m, ref_m, ref_feats, regions_ref)
                new_src, ci_s, _, _ = model.rematch(pred_src, trg_m, src_m, src_feats, regions_src)
                l_cycle = l_cycle + F.l1_loss(soft_warp(new_ref, ci.permute(0, 3, 4, 1, 2)), ref_feats)
                l_cycle = l_cycle + F.l1_loss(soft_warp(new_src, ci_s.permute(0, 3, 4, 1, 2)), src_feats)
                with torch.no_grad():
                    m = model.confidence(fbcheck(*get_flow(ci))[0], regions_ref)[1]
                    # Spread of the re-matching correlation: 0 means a collapsed, uniform match.
                    out["rematch_spread"] = ci.std()
                pred_ref = new_ref * m + pred_ref * (1 - m)
                out["mask_mean"] = m.mean().detach()
            pred_ref, p_ref = one_step(diff, sched, pred_ref, s, p_ref, g, cond)
            pred_src, p_src = one_step(diff, sched, pred_src, s, p_src, g, cond)
            if k == rand_idx:
                pred_orig, _ = one_step(diff, sched, src_feats, s, None, g, cond)
                l_diff = l_diff + F.mse_loss(pred_orig, src_feats)
    warped_ref = ae.decode(pred_ref)
    warped_src = ae.decode(pred_src)
    f_src = ae.features(src)
    f_wsrc = ae.features(warped_src)
    if vgg is None:
        f_ref = ae.features(ref)
        f_wref = ae.features(warped_ref)
    else:
        # float32 features; the targets' need no graph.
        with torch.no_grad():
            v_src = vgg(src.float())
            v_ref = None if warm else vgg(ref.float())
        v_wref = vgg(warped_ref.float())
    l_dom = L.domain_loss(trg_m, src_m, ref_m)
    l_src = L.src_loss(f_wsrc, f_src)
    l_perc = L.perc_loss(f_wref, f_src) if vgg is None else L.vgg_perc_loss(v_wref, v_src)
    total = L.W_DOM * l_dom + L.W_CYCLE * l_cycle + L.W_SRC * l_src + w_perc * l_perc + L.W_DIFF * l_diff
    if warm:
        total = total + warm_iter * l_iter
    elif iter_align > 0:
        l_iter = L.domain_loss(model.iter_enc(src_feats, seg=trg_m), src_m, ref_m)
        total = total + iter_align * l_iter
    l_style = torch.zeros((), device=total.device)
    if not warm:
        l_style = L.style_loss(f_wref, f_ref) if vgg is None else L.vgg_style_loss(v_wref, v_ref)
        total = total + w_style * l_style
    if w_colour > 0:
        out["colour"] = L.colour_loss(warped_ref, src)
        total = total + w_colour * out["colour"]
    out.update({"loss": total, "dom": l_dom, "cycle": l_cycle, "src": l_src, "perc": l_perc, "style": l_style,
                "diff": l_diff, "iter_align": l_iter, "warped_ref": warped_ref, "warped_src": warped_src})
    return out


def set_unet_trainable(model, flag):
    model.diff_model.model.diffusion_model.requires_grad_(flag)


def corr_named_parameters(model, nets=CORR_NETS):
    return [(n, p) for n, p in model.named_parameters() if n.split(".")[0] in nets]


def corr_parameters(model, nets=CORR_NETS):
    return [p for _, p in corr_named_parameters(model, nets)]


def freeze(model, nets):
    """Keeps the matching networks `nets` exactly as they are (`--train-nets` leaves them out): no
    gradients, and eval mode after every `model.train()`, since spectral norm's power iteration
    would otherwise update their u vectors, and with them the weights they compute with."""
    for n in nets:
        getattr(model, n).requires_grad_(False).eval()


class CorrEma:
    """`--corr-ema D`: an exponential moving average (decay D, `common.WeightEma`) of the matching
    networks' weights, which validation scores, `best.pt` keeps and so the stage finishes with; the
    optimiser and the stage checkpoint keep the live weights. At batch 4 on the CPU consecutive
    checkpoints differ a lot (model v1.3's end-to-end stage, hand-drawn set at seed 0: IoU 0.631 at
    step 900, 0.680 at step 1,000). Spectral norm's u and v vectors (buffers) stay live. D = 0: off."""

    def __init__(self, model, decay, path, device="cpu", nets=CORR_NETS):
        self.decay = decay
        named = corr_named_parameters(model, nets) if decay > 0 else []
        self.names, self.params = [n for n, _ in named], [p for _, p in named]
        self.ema = WeightEma(dict(named), path, device)
        self.avg = [self.ema.avg[n] for n in self.names]

    def update(self):
        self.ema.update(self.decay)

    def applied(self):
        return self.ema.applied()

    def save(self):
        self.ema.save()


def batches(train, a, step):
    """The stage's batch source: EmojiBatches draws on its device in this process; PairBatches
    (train.pairs) are made in `--workers` processes and copied over without blocking."""
    from .pairs import Loader, PairBatches

    if isinstance(train, PairBatches):
        loader = Loader(train, a.batch, a.device, getattr(a, "workers", 0), seed=train.seed + 7 * step)
        return loader.next
    return lambda: train.batch(a.batch)


def val_score(out, batch):
    """The checkpoint-selection score: the hand-drawn metrics (train.drawn_eval) on validation pairs,
    silhouette IoU + a*b* colour intersection - chamfer / 10 px, mean over the pairs (higher is
    better; the hand-drawn set itself stays a test set)."""
    from .drawn_eval import score, to_u8_images

    outs, refs = to_u8_images(out.float().cpu()), to_u8_images(batch["ref"].float().cpu())
    lines = (batch["edge"][:, 0].cpu().numpy() > 0.5)
    s = [score(ln, o, r, False) for ln, o, r in zip(lines, outs, refs)]
    return float(np.mean([x["iou"] + x["colour"] - x["chamfer"] / 10 for x in s]))


def train_corr(model, a, stage, train, val, warm_stage):
    """`warm_stage`: True for the warm-up stage (UNet frozen, not called), False for end-to-end."""
    model.ae.eval()
    model.ae.requires_grad_(False)
    unet = model.diff_model.model.diffusion_model
    lr = a.lr or 1e-4
    nets = tuple(getattr(a, "train_nets", None) or CORR_NETS)
    frozen = [n for n in CORR_NETS if n not in nets]
    freeze(model, frozen)
    groups = [{"params": corr_parameters(model, nets), "lr": lr}]
    if getattr(a, "seg_lr", None) and "seg_enc" in nets:
        # seg_enc at its own rate (a v1.1 run seeded from v1 starts its fill weights at zero); a
        # group of its own only then, so that runs without it resume their optimiser state
        seg = [p for n, p in model.named_parameters() if n.startswith("seg_enc.")]
        groups = [{"params": [p for p in groups[0]["params"] if all(p is not q for q in seg)], "lr": lr},
                  {"params": seg, "lr": a.seg_lr}]
    opt = adam(groups + [{"params": list(unet.parameters()), "lr": a.unet_lr}], a.device, betas=(0.5, 0.999))
    step, elapsed = stage.resume(model, opt)
    logged = ["loss", "dom", "cycle", "src", "perc", "style", "diff", "iter_align", "rematch_spread"]
    if getattr(a, "w_colour", 0.0) > 0:
        logged.append("colour")
    log = Logger(os.path.join(stage.dir, "losses.csv"), ["phase"] + logged + ["val_score"])
    clock = Clock(elapsed, a.minutes)
    g = torch.Generator().manual_seed(2000 + step + 7919 * Dist.rank)
    random.seed(step)
    nv = 32 if torch.device(a.device).type == "cuda" else 8
    vb = val.batch(nv, augment=False, indices=val.idx[:: max(1, len(val) // nv)][:nv],
                   exemplar_k=torch.zeros(nv, dtype=torch.long))
    vb = {k: v.to(a.device) for k, v in vb.items()}
    next_batch = batches(train, a, step)
    ema = CorrEma(model, getattr(a, "corr_ema", 0.0), os.path.join(stage.dir, "corr_ema.pt"), a.device, nets)
    pbar = tqdm(total=a.steps, initial=step, mininterval=30, desc="corr", disable=not Dist.main())
    acc = {}
    guarded_step = GuardedStep(opt, model.parameters(), stage.ckpt)
    vgg = None
    if getattr(a, "features", "ae") == "vgg":
        from .vgg import load_vgg

        vgg = load_vgg(a.vgg, a.device)
    while step < a.steps and not clock.out_of_time():
        warm = warm_stage
        set_unet_trainable(model, not warm and a.unet_lr > 0)
        model.train()
        model.ae.eval()
        freeze(model, frozen)
        if warm:
            unet.eval()
        b = next_batch()
        with autocast(a):
            o = forward_train(model, b, warm, g, a.iter_align, a.w_perc, a.w_style, vgg, getattr(a, "warm_iter", 0.0),
                              getattr(a, "w_colour", 0.0))
        opt.zero_grad()
        o["loss"].backward()
        Dist.average_grads(opt)
        if not guarded_step(step):
            continue
        step += 1
        ema.update()
        pbar.update(1)
        for k in logged:
            if k not in o:
                continue
            # kept on the device until the log line: no host round trip per step
            v = o[k].detach().float() if torch.is_tensor(o[k]) else torch.tensor(float(o[k]))
            acc[k] = acc.get(k, []) + [v.to(a.device)]
        if step % 25 == 0:
            means = {k: torch.stack(v).mean().item() for k, v in acc.items()}
            acc = {}
            log.log(step, clock.elapsed(), phase=0.0 if warm else 1.0, **means)
            pbar.set_postfix(loss=f"{means['loss']:.3f}", phase="warm" if warm else "e2e")
        if step % 100 == 0 or step == a.steps:
            model.eval()
            with ema.applied():
                with torch.no_grad():
                    out, _ = model.translate(vb["edge"], vb["ref"], vb["ref_edge"],
                                             generator=torch.Generator().manual_seed(0))
                sc = val_score(out, vb)
                stage.keep_best(model, sc, step)
            save_grid(os.path.join(stage.dir, f"samples_{step:06d}.png"),
                      [edge_to_pm1(vb[k][:8]) if k == "edge" else vb[k][:8] for k in ("edge", "ref")] +
                      [out[:8], vb["image"][:8]])
            log.log(step, clock.elapsed(), phase=0.0 if warm else 1.0, val_score=sc)
            stage.save(model, opt, step, clock.elapsed())
            ema.save()
    guarded_step.check(step)
    stage.save(model, opt, step, clock.elapsed())
    ema.save()
    if step >= a.steps or (a.finish_on_timeout and clock.out_of_time()):
        with ema.applied():  # without a best.pt the stage finishes with the average too
            best = stage.finish(model, best=True)
        if best:
            print(f"finished with the best validation score: step {best['step']}, {best['score']:.4f}")
        print(f"{'warmup' if warm_stage else 'e2e'} done: {step} steps, {clock.elapsed() / 60:.1f} min")
