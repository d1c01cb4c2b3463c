"""Staged, resumable training of the MIDM emoji model.

    python -m train.train ae   --minutes 20   # VQ autoencoder (then frozen)
    python -m train.train unet --minutes 25   # latent UNet, eps prediction, LDM schedule
    python -m train.train warmup --minutes 25 # correspondence warm-up (needs only the autoencoder)
    python -m train.train e2e --minutes 25    # end-to-end fine-tuning (correspondence + UNet)
    python -m train.train decoder --minutes 25 # sharper decoder on the same codes (optional, any time after ae)

Each stage resumes from train/runs/<stage>/ckpt.pt (weights, optimiser, step) when present and
otherwise starts from the previous stage's train/runs/midm_<prev>.pt. `--steps` is the stage's total
step target; `--minutes` caps this invocation's wall time (run it again to continue). Losses go to
train/runs/<stage>/losses.csv, sample grids to train/runs/<stage>/samples_<step>.png.
"""
import argparse
import json
import os

import torch
import torch.nn.functional as F
from tqdm import tqdm

from .common import (Clock, Dist, EmojiBatches, GuardedStep, Logger, Stage, WeightEma, adam, autocast, randint,
                     randn, save_grid, setup_device, to_pm1)
from .config import (AE_PREFIX, CORR_NETS, CORR_PREFIXES, RECIPES, UNET_PREFIX, apply_recipe, corr_kwargs,
                     default_config, recipe_of)
from .evaluate import laplacian_pyramid
from .losses import W_PERC, W_PERC_VGG, W_STYLE, W_STYLE_VGG, ab_distance, style_loss
from .midm import MIDM, UNET_CONDITION_CHANNELS
from .ops import to_device
from .pairs import apply_colour, random_hue_rotations

PREV = {"ae": None, "unet": "ae", "warmup": "ae", "e2e": "unet", "decoder": "ae"}


def _write_json(path, obj):
    """Written whole or not at all: torchrun's ranks all set up a new folder at the same moment."""
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def run_config(run_dir, unet_channels=None, size=None, n_embed=None, recipe=None):
    """The run folder's config.json, written for a new folder; `unet_channels`, `size` (image side),
    `n_embed` (codebook size) and `recipe` (config.RECIPE_V2's widths and label rule for "v2") set
    up a new run folder and must agree with an existing one's."""
    cfg_path = os.path.join(run_dir, "config.json")
    if os.path.exists(cfg_path):
        cfg = json.load(open(cfg_path))
        p = cfg["model"]["params"]
        have = {"--unet-channels": (unet_channels, p["unet_config"]["params"]["model_channels"]),
                "--size": (size, cfg["midms"]["image_size"]),
                "--n-embed": (n_embed, p["first_stage_config"]["params"]["n_embed"])}
        have["--recipe"] = (recipe, recipe_of(cfg))
        for flag, (want, got) in have.items():
            if want and want != got:
                raise SystemExit(f"{cfg_path} fixes {flag} at {got}; {flag} applies to new runs only")
        return cfg
    cfg = apply_recipe(default_config(size or 64), recipe or "v1")
    if unet_channels:
        cfg["model"]["params"]["unet_config"]["params"]["model_channels"] = unet_channels
    if n_embed:
        cfg["model"]["params"]["first_stage_config"]["params"]["n_embed"] = n_embed
    os.makedirs(run_dir, exist_ok=True)
    _write_json(cfg_path, cfg)
    return cfg


def build(run_dir, unet_channels=None, size=None, n_embed=None, recipe=None):
    """The run folder's config (see `run_config`) and a model built from it."""
    cfg = run_config(run_dir, unet_channels, size, n_embed, recipe)
    return cfg, MIDM(cfg, **corr_kwargs(cfg))


INIT = "init.pt"


def seed_run(run_dir, export_dir, recipe=None, unet_condition=False):
    """A new run folder that continues an exported model (`train.export`'s safetensors and config):
    its config.json comes from the export's config.yaml and every stage starts from the exported
    weights (`init.pt`) instead of a fresh initialisation. The autoencoder stays as exported.
    `recipe="v2"` on a v1 or v1.1 export keeps its autoencoder, UNet and decoder and starts the (wider)
    correspondence networks afresh, for the warm-up to train. `recipe="v1.1"` keeps every network;
    seg_enc's weights for the new fill channel start at zero, so the seeded model computes what the
    export does on the same (max-pooled) line label. `unet_condition` gives an unconditional UNet
    `midms.unet_condition`'s extra input channels, their weights at zero (the same outputs until
    the unet stage trains them)."""
    import yaml
    from safetensors.torch import load_file

    if os.path.exists(os.path.join(run_dir, "config.json")):
        raise SystemExit(f"{run_dir} already holds a run: only a new run folder can be seeded")
    cfg = yaml.safe_load(open(os.path.join(export_dir, "config.yaml")))
    sd = load_file(os.path.join(export_dir, "model.safetensors"))
    MIDM(cfg, **corr_kwargs(cfg)).load_state_dict(sd)  # refuses an export that does not fit its config
    if recipe == "v2" and recipe_of(cfg) != "v2":
        apply_recipe(cfg, "v2")
        sd = {k: v for k, v in sd.items() if not k.startswith(CORR_PREFIXES)}
    elif recipe == "v1.1" and not cfg["midms"].get("label_fill"):
        apply_recipe(cfg, "v1.1")
        sd = zero_padded(sd, MIDM(cfg, **corr_kwargs(cfg)).state_dict())
    if unet_condition and not cfg["midms"].get("unet_condition"):
        cfg["midms"]["unet_condition"] = True
        cfg["model"]["params"]["unet_config"]["params"]["in_channels"] += UNET_CONDITION_CHANNELS
        sd = zero_padded(sd, MIDM(cfg, **corr_kwargs(cfg)).state_dict())
    os.makedirs(run_dir, exist_ok=True)
    torch.save(sd, os.path.join(run_dir, INIT))
    _write_json(os.path.join(run_dir, "config.json"), {"model": cfg["model"], "midms": cfg["midms"]})
    return cfg


def zero_padded(sd, like):
    """`sd` with every tensor that is smaller than its counterpart in `like` zero-padded to its shape
    (new input channels, and the spectral norm's `weight_v` of them, start at zero)."""
    out = dict(sd)
    for k, v in sd.items():
        want = like[k].shape
        if v.shape != want:
            assert v.dim() == len(want) and all(a <= b for a, b in zip(v.shape, want)), (k, v.shape, want)
            p = torch.zeros(want, dtype=v.dtype)
            p[tuple(slice(0, n) for n in v.shape)] = v
            out[k] = p
    return out


def load_prev(model, run_dir, stage, anchor=0.0):
    """Starts `stage` from what the run has: the previous stage's result, or in a run seeded from an
    export (`init.pt`) the exported weights (with the autoencoder of an anchored ae stage, when the
    run has one)."""
    path = lambda n: os.path.join(run_dir, f"midm_{n}.pt")
    load = lambda p: torch.load(p, map_location="cpu")
    init = os.path.join(run_dir, INIT)
    seeded = os.path.exists(init)
    if seeded:
        if stage == "ae" and anchor <= 0:
            raise SystemExit(f"{run_dir} continues an exported model: its autoencoder stays frozen "
                             "(retraining it would invalidate the latents of the UNet and the matching), "
                             "unless --anchor keeps its latents close to the exported encoder's")
        sd = load(init)
        if stage != "ae" and os.path.exists(path("ae")):
            sd.update({k: v for k, v in load(path("ae")).items() if k.startswith(AE_PREFIX)})
    else:
        p = PREV[stage]
        if p is None:
            return
        if not os.path.exists(path(p)):
            raise SystemExit(f"stage {stage} needs {path(p)}: run `python -m train.train {p}` first")
        sd = load(path(p))
        if stage in ("unet", "decoder"):
            # Only the frozen autoencoder carries over; the UNet starts from its initialisation (its
            # width may differ from the one the autoencoder stage was built with).
            sd = {k: v for k, v in sd.items() if not k.startswith(UNET_PREFIX)}
            missing, unexpected = model.load_state_dict(sd, strict=False)
            assert not unexpected and all(k.startswith(UNET_PREFIX) for k in missing), (missing, unexpected)
            return
    if seeded and not any(k.startswith(CORR_PREFIXES) for k in sd):
        # seeded for a new recipe: fresh correspondence networks, which the warm-up trains first
        if stage == "e2e" and not os.path.exists(path("warmup")):
            raise SystemExit(f"stage e2e needs {path('warmup')}: this run's correspondence networks are new")
    if stage == "e2e":
        # UNet from the unet stage, correspondence networks from the warm-up stage (a seeded run
        # keeps the export's where it did not train them again).
        if seeded and os.path.exists(path("unet")):
            sd.update({k: v for k, v in load(path("unet")).items() if k.startswith(UNET_PREFIX)})
        if os.path.exists(path("warmup")):
            sd.update({k: v for k, v in load(path("warmup")).items() if k.startswith(CORR_PREFIXES)})
        elif not seeded:
            raise SystemExit(f"stage e2e needs {path('warmup')}: run `python -m train.train warmup` first")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    # Only a recipe change may leave the correspondence networks at their initialisation.
    assert not unexpected and all(k.startswith(CORR_PREFIXES) for k in missing), (missing[:5], unexpected[:5])
    assert not missing or seeded and stage in ("ae", "warmup", "unet", "decoder"), missing[:5]


# ---------------------------------------------------------------------------------------------
# Stage 1: VQ autoencoder
def ae_losses(ae, x, anchor_enc=None, anchor=0.0, w_ab=0.0):
    """L1 + VQ loss; with `anchor_enc` (a frozen copy of the exported encoder) also `anchor` x the
    MSE between the latents and that encoder's, so that a fine-tuned autoencoder keeps the latent
    space the UNet and the matching networks were trained in. `w_ab` weighs the mean CIELAB a*b*
    distance (/ 128) of 4x4-pixel means: RGB L1 lets a brown stand in for a green at a small cost
    (model v1's autoencoder turns Twemoji's green tree brown and its red heart orange)."""
    z = ae.encode(x)
    zq, qloss, idx = ae.quantize(z)
    rec = ae.decode_noquant(zq)
    l1 = (rec - x).abs().mean()
    out = {"loss": l1 + qloss, "l1": l1, "qloss": qloss}
    if w_ab > 0:
        out["ab"] = ab_distance(rec, x)
        out["loss"] = out["loss"] + w_ab * out["ab"]
    if anchor_enc is not None:
        with torch.no_grad():
            z0 = anchor_enc(x)
        out["anchor"] = F.mse_loss(z, z0)
        out["loss"] = out["loss"] + anchor * out["anchor"]
    return out, rec, idx


@torch.no_grad()
def reinit_dead_codes(ae, usage, z, g):
    """Codes unused since the last check are moved onto random current latents (avoids collapse)."""
    dead = usage == 0
    n = int(dead.sum())
    if n:
        zf = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        pick = zf[randint(len(zf), (n,), g, zf.device)]
        ae.quantize.embedding.weight.data[dead] = pick + 0.01 * randn(pick.shape, g, zf.device)
    return n


@torch.no_grad()
def normalize_latent_scale(ae, x):
    """Exact reparametrisation so that encode(x) has unit std: scale quant_conv and the codebook
    by s and post_quant_conv's weight by 1/s (decode(encode(x)) is unchanged)."""
    s = 1.0 / ae.encode(x).std().item()
    # Under torchrun each rank measured its own batch: all take rank 0's factor.
    s = Dist.broadcast_(torch.tensor([s], device=x.device)).item()
    ae.quant_conv.weight.mul_(s)
    ae.quant_conv.bias.mul_(s)
    ae.quantize.embedding.weight.mul_(s)
    ae.post_quant_conv.weight.mul_(1.0 / s)
    return s


def train_ae(model, a, stage, train, val):
    ae = model.ae
    opt = torch.optim.Adam(ae.parameters(), lr=a.lr or 3e-4, betas=(0.5, 0.9))
    step, elapsed = stage.resume(model, opt)
    log = Logger(os.path.join(stage.dir, "losses.csv"), ["loss", "l1", "qloss", "anchor", "ab", "codes_used", "val_l1"])
    clock = Clock(elapsed, a.minutes)
    g = torch.Generator().manual_seed(step + 7919 * Dist.rank)
    anchor_enc = None
    if a.anchor > 0:
        # The exported encoder (init.pt), also when the stage resumes its own fine-tuned weights.
        import copy

        if not os.path.exists(os.path.join(a.run, INIT)):
            raise SystemExit(f"--anchor fine-tunes an exported autoencoder: {a.run} was not seeded from an export")

        init = {k[len(AE_PREFIX):]: v for k, v in torch.load(os.path.join(a.run, INIT), map_location="cpu").items()
                if k.startswith(AE_PREFIX)}
        ref = copy.deepcopy(ae).cpu()
        ref.load_state_dict(init)
        ref.requires_grad_(False)
        anchor_enc = ref.to(a.device).eval().encode
    usage = torch.zeros(ae.quantize.embedding.num_embeddings, device=a.device)
    vb = val.batch(16, augment=False, indices=val.idx[:16], exemplar_k=torch.zeros(16, dtype=torch.long))
    ae.train()
    pbar = tqdm(total=a.steps, initial=step, mininterval=30, desc="ae", disable=not Dist.main())
    while step < a.steps and not clock.out_of_time():
        b = train.batch(a.batch)
        x = torch.cat([b["image"], b["ref"]])[: a.batch]
        if a.hue > 0:
            # Every hue as often as any other: model v1's autoencoder, trained on Noto alone, had
            # no latent direction for green (Twemoji's green tree came back brown).
            x = apply_colour(x, random_hue_rotations(len(x), g, a.hue).to(x.device))
        if a.crop:
            # The autoencoder is convolutional: random crops make a step ~4x cheaper on CPU.
            oy, ox = torch.randint(0, x.shape[-1] - a.crop + 1, (2,), generator=g).tolist()
            x = x[..., oy:oy + a.crop, ox:ox + a.crop]
        losses, rec, idx = ae_losses(ae, x, anchor_enc, a.anchor, a.w_ab)
        opt.zero_grad()
        losses["loss"].backward()
        Dist.average_grads(opt)
        opt.step()
        usage += torch.bincount(idx.flatten(), minlength=len(usage)).float()
        step += 1
        pbar.update(1)
        if step % 100 == 0:
            Dist.sum_(usage)
            used = int((usage > 0).sum())
            if step <= a.steps * 0.8:
                reinit_dead_codes(ae, usage, ae.encode(x).detach(), g)
                Dist.broadcast_(ae.quantize.embedding.weight.data)  # ranks drew different latents
            usage.zero_()
            with torch.no_grad():
                ae.eval()
                vl = ae_losses(ae, vb["image"])[0]["l1"].item()
                ae.train()
            log.log(step, clock.elapsed(), loss=losses["loss"].item(), l1=losses["l1"].item(),
                    qloss=losses["qloss"].item(), anchor=losses["anchor"].item() if anchor_enc else 0.0,
                    ab=losses["ab"].item() if a.w_ab > 0 else 0.0,
                    codes_used=used, val_l1=vl)
            pbar.set_postfix(l1=f"{losses['l1'].item():.4f}", val=f"{vl:.4f}", codes=used)
        if step % 500 == 0 or step == a.steps:
            with torch.no_grad():
                ae.eval()
                save_grid(os.path.join(stage.dir, f"samples_{step:06d}.png"), [vb["image"], ae(vb["image"])[0]])
                ae.train()
            stage.save(model, opt, step, clock.elapsed())
    stage.save(model, opt, step, clock.elapsed())
    if step >= a.steps or (a.finish_on_timeout and clock.out_of_time()):
        ae.eval()
        if anchor_enc is None:  # an anchored fine-tune keeps the exported latents' scale
            xs = train.batch(256, augment=False)["image"]
            s = normalize_latent_scale(ae, xs)
            print(f"latent scale factor folded into quant_conv/codebook/post_quant_conv: {s:.4f}")
        stage.finish(model)
        print(f"ae done: {step} steps, {clock.elapsed() / 60:.1f} min")


def decoder_losses(ae, zq, x, w_ab=0.0, measure_ab=True):
    """L1 plus L1 of the Laplacian-pyramid band-pass levels (a sharpness term: plain L1 on a code
    this small is minimised by blur); `w_ab` weighs the a*b* colour term of the ae stage, which is
    also measured unweighted when `measure_ab` (for the log: runs with and without it compare)."""
    rec = ae.decode_noquant(zq)
    l1 = (rec - x).abs().mean()
    lap = sum((a - b).abs().mean() for a, b in zip(laplacian_pyramid(rec)[:-1], laplacian_pyramid(x)[:-1]))
    out = {"loss": l1 + lap, "l1": l1, "lap": lap}
    if w_ab > 0 or measure_ab:
        out["ab"] = ab_distance(rec, x)
    if w_ab > 0:
        out["loss"] = out["loss"] + w_ab * out["ab"]
    return out, rec


@torch.no_grad()
def encode_training_set(ae, train, quantize=False):
    """Every training image and its mirror image (uint8), with their latents (or codes). The unet
    and decoder stages keep the autoencoder frozen and augment only by flipping, so each latent is
    encoded once instead of every step (half of a step's time otherwise)."""
    imgs = train.images[train.idx]
    imgs = torch.cat([imgs, imgs.flip(3)])
    code = (lambda c: ae.quantize(ae.encode(c))[0]) if quantize else ae.encode
    return imgs, torch.cat([code(to_pm1(c)) for c in imgs.split(256)])


def _encoder_digest(ae, train):
    """What the unet stage's latents depend on: the encoder's weights (quant_conv included) and the
    training split (its indices, the images' shape and a strided sample of their bytes)."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(ae.state_dict().items()):
        if k.startswith(("encoder.", "quant_conv.")):
            h.update(k.encode())
            h.update(v.detach().float().cpu().numpy().tobytes())
    h.update(train.idx.cpu().numpy().tobytes())
    h.update(str(tuple(train.images.shape)).encode())
    flat = train.images.reshape(-1)  # a view: no copy of the set (~1 GB at 128)
    h.update(flat[:: max(1, flat.numel() // 1_000_000)].cpu().numpy().tobytes())
    return h.hexdigest()


def cached_training_latents(ae, train, path):
    """`encode_training_set`'s latents, kept in `path` for the next start of the stage: on 2 CPU cores
    encoding the v2 set and its mirror images takes ~6 min of every unet-stage start (model v1.2's
    UNet stage was started four times). The file is used only when the encoder and the images are
    the ones it was made from (`_encoder_digest`); otherwise it is rewritten."""
    key = _encoder_digest(ae, train)
    if os.path.exists(path):
        c = torch.load(path, map_location=train.images.device)
        if c.get("key") == key:
            return c["z"]
    z = encode_training_set(ae, train)[1]
    if Dist.main():
        torch.save({"key": key, "z": z}, path + ".tmp")
        os.replace(path + ".tmp", path)
    return z


def train_decoder(model, a, stage, train, val):
    """Fine-tunes post_quant_conv and the decoder on the frozen encoder's codes. The latents, and so
    the UNet and the correspondence networks trained on them, stay valid; export takes the decoder
    from this stage's midm_decoder.pt when the run has one."""
    ae = model.ae
    ae.requires_grad_(False)
    params = list(ae.decoder.parameters()) + list(ae.post_quant_conv.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=a.lr or 1e-4, betas=(0.5, 0.9))
    step, elapsed = stage.resume(model, opt)
    log = Logger(os.path.join(stage.dir, "losses.csv"), ["loss", "l1", "lap", "ab", "val_l1", "val_lap", "val_ab"])
    clock = Clock(elapsed, a.minutes)
    ae.eval()  # no dropout or batch statistics in the decoder; eval keeps the frozen parts exact
    # On a GPU the whole set is encoded once. On the CPU a run sees fewer images than the set holds
    # (30 min at 1.1 s per step of batch 8: ~13,000 images, against 19,524 images and mirrors), and
    # encoding all of them had not finished after 12 min on 2 cores (half of it the kernel zeroing
    # pages for batches of 256): there each batch is encoded when drawn.
    # Hue-rotated images must be encoded after the rotation, so --hue encodes each batch too.
    once = torch.device(a.device).type != "cpu" and a.hue == 0
    if once:
        imgs, zqs = encode_training_set(ae, train, quantize=True)
    else:
        imgs = train.images[train.idx]
    with torch.no_grad():
        vb = val.pixels(val.idx[:64])
        vzq = ae.quantize(ae.encode(vb))[0]
    pbar = tqdm(total=a.steps, initial=step, mininterval=30, desc="decoder", disable=not Dist.main())
    while step < a.steps and not clock.out_of_time():
        i = randint(len(imgs), (a.batch,), train.g, imgs.device)
        if once:
            zq, x = zqs[i], to_pm1(imgs[i])
        else:
            x = to_pm1(imgs[i])
            flip = torch.rand(a.batch, generator=train.g) < 0.5
            x = torch.where(flip.view(-1, 1, 1, 1).to(x.device), x.flip(3), x)
            if a.hue > 0:
                x = apply_colour(x, random_hue_rotations(len(x), train.g, a.hue).to(x.device))
            with torch.no_grad():
                zq = ae.quantize(ae.encode(x))[0]
        # unweighted, the colour term is only wanted on the steps that are logged
        losses, _ = decoder_losses(ae, zq, x, a.w_ab, measure_ab=(step + 1) % 100 == 0)
        opt.zero_grad()
        losses["loss"].backward()
        Dist.average_grads(opt)
        opt.step()
        step += 1
        pbar.update(1)
        if step % 100 == 0:
            with torch.no_grad():
                vl, rec = decoder_losses(ae, vzq, vb)
            log.log(step, clock.elapsed(), loss=losses["loss"].item(), l1=losses["l1"].item(),
                    lap=losses["lap"].item(), ab=losses["ab"].item(), val_l1=vl["l1"].item(),
                    val_lap=vl["lap"].item(), val_ab=vl["ab"].item())
            pbar.set_postfix(l1=f"{losses['l1'].item():.4f}", val_l1=f"{vl['l1'].item():.4f}")
        if step % 1000 == 0 or step == a.steps:
            with torch.no_grad():
                save_grid(os.path.join(stage.dir, f"samples_{step:06d}.png"), [vb[:16], decoder_losses(ae, vzq[:16], vb[:16], measure_ab=False)[1]])
            stage.save(model, opt, step, clock.elapsed())
    stage.save(model, opt, step, clock.elapsed())
    if step >= a.steps or (a.finish_on_timeout and clock.out_of_time()):
        stage.finish(model)
        print(f"decoder done: {step} steps, {clock.elapsed() / 60:.1f} min")


# ---------------------------------------------------------------------------------------------
# Stage 2: latent UNet
def diffusion_loss(model, z, g=None, low_t_fraction=0.7, low_t_max=400, cond=None, texture=None):
    """Epsilon-prediction MSE. MIDM only queries the UNet at t <= 311 (matching loop) and t <= 101
    (refinement), so `low_t_fraction` of the timesteps are drawn from [0, low_t_max) and the rest
    uniformly from [0, T) (the latter keeps plain sampling from noise working). `cond`: the UNet's
    condition channels (a model with `midms.unet_condition`). `texture`: (weight, n) adds weight times
    `x0_texture_loss` on the first n samples."""
    diff = model.diff_model
    b = z.shape[0]
    t_all = torch.randint(0, diff.num_timesteps, (b,), generator=g)
    t_low = torch.randint(0, low_t_max, (b,), generator=g)
    t = to_device(torch.where(torch.rand(b, generator=g) < low_t_fraction, t_low, t_all), z.device)
    n = randn(z.shape, g, z.device)
    x_t = diff.q_sample(z, t, n)
    eps = diff.eps(x_t, t, cond)
    loss = F.mse_loss(eps, n)
    if texture is None or not texture[0]:
        return loss
    w, k = texture
    return loss + w * x0_texture_loss(model, z[:k], x_t[:k], t[:k], eps[:k])


def x0_from_eps(diff, x_t, t, eps):
    """The x0 estimate of a noised latent x_t at timesteps t (one per sample) from the UNet's eps."""
    shape = (-1, 1, 1, 1)
    return (x_t - diff.sqrt_one_minus_alphas_cumprod[t].view(shape) * eps) / diff.sqrt_alphas_cumprod[t].view(shape)


def x0_texture_loss(model, z, x_t, t, eps):
    """L_style (losses.style_loss: contextual loss on the autoencoder's feature levels) between the
    UNet's x0 estimate, decoded as the sampler decodes (quantised, straight-through), and the decoded
    target (not in the paper; ours). The eps-MSE makes the x0 estimate from the loop's noise levels
    the mean of what the target could be: smoother than any target, and the full model's outputs,
    which keep that estimate where the cycle check rejects the re-warp, lost held-out SWD to the
    row without the mask (train/README.md). A contextual loss asks for the target's kind of
    features, not their places."""
    x0 = x0_from_eps(model.diff_model, x_t, t, eps)
    with torch.no_grad():
        f_ref = model.ae.features(model.ae.decode(z))
    return style_loss(model.ae.features(model.ae.decode(x0)), f_ref)  # the quantiser is straight-through


WARP_T_MAX = 260  # MIDM's loop starts at t = 249 (16 DDIM steps, the last quarter)


@torch.no_grad()
def warp_start(model, batch):
    """(the target's latent, the exemplar's latent warped to the drawing as `MIDM.translate` warps
    it before its loop, the UNet's condition) of a pair batch."""
    z = model.ae.encode(batch["image"])
    ref_feats = model.ae.encode(batch["ref"])
    regions = model.regions(batch["edge"], batch["ref"], z.shape[2:], batch.get("ref_fg"))
    m = model.match(batch["edge"], ref_feats, batch["ref_edge"], regions=regions)
    return z, m["warped"], model.unet_cond(batch["edge"], z.shape[2:])


def warp_start_loss(model, batch, g, t_min, t_max):
    """The UNet's x0 from a noised warp start, against the target (not in the paper; ours). MIDM's
    loop starts from the exemplar's latent softly warped to the drawing and noised to t = 249, and
    the UNet's first x0 estimate decides the shape: a UNet trained on noised targets only turned a
    held-out button's blurred warped symbol into blobs (train/README.md). Here the exemplar is the
    target itself (`PairBatches.self_pairs`: jittered, recoloured, on a background for some), warped
    by the model's frozen first matching exactly as the sampler warps it, noised to a timestep of
    [t_min, t_max), and the UNet (seeing the drawing) is asked for the target's latent: the loss is
    the MSE of its x0 estimate (at t = 249 about the eps-MSE's scale: alpha_bar / (1 - alpha_bar) =
    1.04). A model with `midms.unet_condition` only. From model v1.11 on the CPU it moved outputs
    nearer the target in L1 and shape but much smoother (held-out SWD 92.2 -> 115.8; train/README.md,
    "The UNet trained on warp starts"): not shipped."""
    diff = model.diff_model
    z, warped, cond = warp_start(model, batch)
    t = randint(t_max - t_min, (z.shape[0],), g, z.device) + t_min
    x = diff.q_sample(warped, t, randn(z.shape, g, z.device))
    return F.mse_loss(x0_from_eps(diff, x, t, diff.eps(x, t, cond)), z)


class ConditionedTargets:
    """Batches of a UNet with `midms.unet_condition`: training targets placed anywhere on the canvas
    with their user-like conditions (train.pairs.PairBatches.targets), encoded on the fly (the
    placement changes every draw, so the latents cannot be cached), and the condition brought to
    the latent grid as the sampler does (MIDM.unet_cond). The targets are made as the warm-up's and
    e2e's pairs are (train.pairs.Loader: in `workers` processes, copied over without blocking), not
    in the training loop. `t_max`: timesteps from [0, t_max) only (a fine-tune on the range MIDM
    queries), else diffusion_loss's mix. `warp_share`: the share of steps that train on warp starts
    instead (warp_start_loss, self-reference pairs), from timesteps [`warp_t_min`, t_max or 260)."""

    def __init__(self, model, train, val, device, t_max=None, n_val=64, workers=0, seed=None, warp_share=0.0,
                 warp_t_min=200, texture=None):
        self.model, self.train, self.device, self.t_max = model, train, device, t_max
        self.texture = texture
        self.workers, self.seed = workers, train.seed if seed is None else seed
        self.warp_share, self.warp_t = warp_share, (warp_t_min, t_max or WARP_T_MAX)
        self._loader = self._pairs = None  # made at the first draw, for its batch size
        b = val._plain(val.idx[:n_val])
        self.val = self._latents(b)

    def _latents(self, b):
        m = self.model
        img, edge = b["image"].to(self.device), b["edge"].to(self.device)
        with torch.no_grad():
            z = m.ae.encode(img)
        return z, m.unet_cond(edge, z.shape[2:], b["fill"].to(self.device))

    def loss(self, n, g, batch=None):
        if batch is None and self.warp_share > 0 and torch.rand((), generator=g) < self.warp_share:
            from .pairs import Loader

            if self._pairs is None:
                self._pairs = Loader(self.train, n, self.device, self.workers, self.seed + 1, make="self_pairs")
            return warp_start_loss(self.model, self._pairs.next(), g, *self.warp_t)
        if batch is None:
            from .pairs import Loader

            if self._loader is None:
                self._loader = Loader(self.train, n, self.device, self.workers, self.seed, make="targets")
            batch = self._latents(self._loader.next())
        z, cond = batch
        texture = self.texture if batch is not self.val else None  # validation stays the eps-MSE
        if self.t_max is None:
            return diffusion_loss(self.model, z, g, cond=cond, texture=texture)
        return diffusion_loss(self.model, z, g, low_t_fraction=1.0, low_t_max=self.t_max, cond=cond, texture=texture)

    def val_loss(self, g):
        return self.loss(None, g, self.val)


@torch.no_grad()
def ddim_sample(model, n, steps=50, g=None, cond=None):
    from .midm import ddim_step

    diff = model.diff_model
    sched = diff.ddim_schedule(steps)
    s = model.ae.quant_conv.out_channels
    h = model.latent_size
    x = randn((n, s, h, h), g, diff.betas.device)
    for i, t in enumerate(sched.time_range):
        index = sched.total_steps - i - 1
        x, _, _, _ = ddim_step(diff, sched, x, index, t, noise=torch.zeros_like(x), cond=cond)
    return model.ae.decode(x)


def train_unet(model, a, stage, train, val):
    unet = model.diff_model.model.diffusion_model
    model.ae.eval()
    model.ae.requires_grad_(False)
    opt = adam(unet.parameters(), a.device, decoupled=True, lr=a.lr or 2e-4, weight_decay=0.0)
    step, elapsed = stage.resume(model, opt)
    log = Logger(os.path.join(stage.dir, "losses.csv"), ["loss", "val_loss"])
    clock = Clock(elapsed, a.minutes)
    g = torch.Generator().manual_seed(1000 + step + 7919 * Dist.rank)
    gv = torch.Generator().manual_seed(7)
    # A UNet that sees the drawing trains on placed targets with their conditions (ConditionedTargets).
    conditioned = (ConditionedTargets(model, train, val, a.device, a.t_max, workers=a.workers,
                                      seed=train.seed + 7 * step, warp_share=a.warp_share, warp_t_min=a.warp_t_min,
                                      texture=(a.x0_texture, a.x0_texture_n) if a.x0_texture else None)
                   if model.unet_condition else None)
    if a.x0_texture and conditioned is None:
        raise SystemExit("--x0-texture needs a UNet that sees the drawing (midms.unet_condition)")
    if a.x0_texture and not a.t_max:
        # From near-pure noise the x0 estimate is divided by sqrt(alpha_bar) down to 0.006: not an image.
        raise SystemExit("--x0-texture needs --t-max (the sampler's noise levels, e.g. 260)")
    if a.warp_share > 0 and conditioned is None:
        raise SystemExit("--warp-share needs a UNet that sees the drawing (midms.unet_condition)")
    if conditioned is None:
        with torch.no_grad():
            zval = model.ae.encode(val.pixels(val.idx[:64]))
    preview_cond = None if conditioned is None else conditioned.val[1][:8]
    # EMA of the UNet weights (decay 0.999, ~1000-step horizon): what ships. It lives next to the
    # stage checkpoint (unet/ema.pt) so that resuming keeps it.
    ema = WeightEma(unet.state_dict(), os.path.join(stage.dir, "ema.pt"), a.device)

    if conditioned is None:
        zs = cached_training_latents(model.ae, train, os.path.join(stage.dir, "latents.pt"))
    val_loss = (lambda: conditioned.val_loss(gv)) if conditioned else (lambda: diffusion_loss(model, zval, gv))

    unet.train()
    pbar = tqdm(total=a.steps, initial=step, mininterval=30, desc="unet", disable=not Dist.main())
    run = None
    guarded_step = GuardedStep(opt, unet.parameters(), stage.ckpt)
    while step < a.steps and not clock.out_of_time():
        with autocast(a):
            if conditioned is None:
                loss = diffusion_loss(model, zs[randint(len(zs), (a.batch,), train.g, zs.device)], g)
            else:
                loss = conditioned.loss(a.batch, g)
        opt.zero_grad()
        loss.backward()
        Dist.average_grads(opt)
        if not guarded_step(step):
            continue
        # LDM's LitEma warm-up: a fresh run's EMA would otherwise keep 0.999^n of the random
        # initialisation (5 % after 3,000 steps).
        ema.update(min(a.ema, (1 + step) / (10 + step)))
        step += 1
        run = loss.detach() if run is None else 0.98 * run + 0.02 * loss.detach()  # no per-step sync
        pbar.update(1)
        if step % 100 == 0:
            with torch.no_grad():
                unet.eval()
                gv.manual_seed(7)
                vl = val_loss().item()
                unet.train()
            log.log(step, clock.elapsed(), loss=run.item(), val_loss=vl)
            pbar.set_postfix(loss=f"{run.item():.4f}", val=f"{vl:.4f}")
        if step % 1000 == 0 or step == a.steps:
            unet.eval()
            imgs = ddim_sample(model, 8, 50, torch.Generator().manual_seed(0), preview_cond)
            save_grid(os.path.join(stage.dir, f"samples_{step:06d}.png"), [imgs])
            unet.train()
            stage.save(model, opt, step, clock.elapsed())
            ema.save()
    guarded_step.check(step)
    stage.save(model, opt, step, clock.elapsed())
    ema.save()
    if step >= a.steps or (a.finish_on_timeout and clock.out_of_time()):
        unet.load_state_dict(ema.avg)
        unet.eval()
        with torch.no_grad():
            gv.manual_seed(7)
            print(f"EMA weights: val eps-MSE {val_loss().item():.4f}")
        imgs = ddim_sample(model, 8, 50, torch.Generator().manual_seed(0), preview_cond)
        save_grid(os.path.join(stage.dir, f"samples_{step:06d}_ema.png"), [imgs])
        stage.finish(model)
        print(f"unet done: {step} steps, {clock.elapsed() / 60:.1f} min")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stage", choices=["ae", "unet", "warmup", "e2e", "decoder"])
    ap.add_argument("--data", default="train/data")
    # --run-dir: torchrun takes "--run" for an abbreviation of its own --run-path
    ap.add_argument("--run", "--run-dir", dest="run", default="train/runs")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate (stage default if unset; also replaces a resumed optimiser's)")
    ap.add_argument("--crop", type=int, default=32, help="ae: random crop side (0 = full images)")
    ap.add_argument("--anchor", type=float, default=0.0,
                    help="ae in a run seeded from an export: fine-tune the autoencoder with this weight on "
                         "the MSE between its latents and the exported encoder's (keeps the UNet's and the "
                         "matching networks' latent space)")
    ap.add_argument("--hue", type=float, default=0.0,
                    help="ae/decoder: share of the training images whose hue is rotated by a random angle")
    ap.add_argument("--w-ab", type=float, default=0.0,
                    help="ae/decoder: weight of the a*b* colour term (CIELAB distance of 4x4-pixel means, / 128)")
    ap.add_argument("--finish-on-timeout", action="store_true",
                    help="when --minutes runs out, finish the stage (write midm_<stage>.pt) at the current step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iter-align", type=float, default=0.0,
                    help="e2e: weight of an extra term keeping F_Y^iter aligned with F_Y (0 = the paper's losses)")
    ap.add_argument("--w-perc", type=float, default=None,
                    help="warmup/e2e: weight of L_perc (default: the paper's, or under --features vgg "
                         "W_PERC_VGG; see train/losses.py)")
    ap.add_argument("--w-style", type=float, default=None,
                    help="e2e: weight of L_style (default: the paper's, or under --features vgg "
                         "W_STYLE_VGG; see train/losses.py)")
    ap.add_argument("--w-colour", type=float, default=0.0,
                    help="warmup/e2e: weight of the a*b* colour-histogram term between translation and target "
                         "(train/losses.py colour_loss; 0 = off, as in the paper)")
    ap.add_argument("--features", choices=["ae", "vgg"], default="ae",
                    help="warmup/e2e: features of L_perc and L_style: the autoencoder's (default) or "
                         "VGG16's from --vgg (train/vgg.py)")
    ap.add_argument("--vgg", default="train/data/vgg16_hed.safetensors",
                    help="--features vgg: the converted VGG16 weights (python -m train.vgg)")
    ap.add_argument("--seg-lr", type=float, default=None,
                    help="warmup/e2e: seg_enc's learning rate (default --lr; a v1.1 run seeded from model v1 "
                         "starts the weights of its fill channel at zero)")
    ap.add_argument("--corr-ema", type=float, default=0.0,
                    help="warmup/e2e: validate, keep as best and finish with an exponential moving average "
                         "of the matching networks' weights with this decay (0 = the live weights)")
    ap.add_argument("--train-nets", nargs="+", choices=list(CORR_NETS), default=None,
                    help="warmup/e2e: the matching networks to train (default: all); the others stay exactly "
                         "as the run has them, e.g. `--train-nets iter_enc` re-trains the re-matching alone "
                         "and leaves the first matching, and so the no-interleaving translation, unchanged")
    ap.add_argument("--unet-lr", type=float, default=1e-5,
                    help="e2e: the UNet's learning rate (0 = keep the unet stage's UNet frozen)")
    ap.add_argument("--unet-channels", type=int, default=None,
                    help="UNet model_channels of a new run (default 32; a multiple of 32)")
    ap.add_argument("--ema", type=float, default=0.999, help="unet: EMA decay of the shipped weights")
    ap.add_argument("--size", type=int, default=None,
                    help="image side of a new run (default 64; 128 = latent 32x32, data from emoji128.npz)")
    ap.add_argument("--n-embed", type=int, default=None, help="VQ codebook size of a new run (default 512)")
    ap.add_argument("--device", default="cpu", help="torch device: cpu (default) or cuda")
    ap.add_argument("--amp", choices=["f32", "bf16"], default="f32",
                    help="unet/warmup/e2e: bf16 autocast (matching, softmaxes, contextual loss and VQ stay f32)")
    ap.add_argument("--recipe", choices=list(RECIPES), default=None,
                    help="model of a new run: v1 (default; the first models) or v2 (config.RECIPE_V2)")
    ap.add_argument("--pairs", choices=["neighbours", "authors"], default=None,
                    help="warmup/e2e training pairs: neighbours (EmojiBatches) or authors (train.pairs: self, "
                         "other style, neighbour; user-like strokes); default: authors for a v2 run")
    ap.add_argument("--workers", type=int, default=0,
                    help="warmup/e2e with --pairs authors, unet with midms.unet_condition: batch-making processes")
    ap.add_argument("--warm-iter", type=float, default=0.0,
                    help="warmup: train F_Y^iter too, with this weight on its alignment term (0 = the authors' warm-up)")
    ap.add_argument("--seed-from", default=None,
                    help="a new --run folder continues this export (train.export's folder, e.g. weights)")
    ap.add_argument("--unet-condition", action="store_true",
                    help="with --seed-from: the UNet also sees the drawing (midms.unet_condition; new input "
                         "channels start at zero), for the unet stage to train")
    ap.add_argument("--t-max", type=int, default=None,
                    help="unet with midms.unet_condition: timesteps from [0, T_MAX) only (default: 70 %% below 400, "
                         "the rest uniform)")
    ap.add_argument("--warp-share", type=float, default=0.0,
                    help="unet with midms.unet_condition: share of steps on warp starts (train.train.warp_start_loss: "
                         "a self-reference pair warped by the frozen first matching, noised, the target asked for)")
    ap.add_argument("--warp-t-min", type=int, default=200,
                    help="--warp-share: the warp starts' timesteps are from [WARP_T_MIN, --t-max or 260) (200: the "
                         "setting measured; below, their x0 error outweighs the eps-MSE steps many times over)")
    ap.add_argument("--x0-texture", type=float, default=0.0,
                    help="unet with midms.unet_condition: weight of x0_texture_loss (contextual loss between the "
                         "decoded x0 estimate and the decoded target) beside the eps-MSE")
    ap.add_argument("--x0-texture-n", type=int, default=8,
                    help="--x0-texture: on the first N samples of each batch (the decoder's backward is the cost)")
    a = ap.parse_args()
    if a.unet_condition and not a.seed_from:
        raise SystemExit("--unet-condition applies to a run seeded with --seed-from")
    vgg = a.features == "vgg"
    if a.w_perc is None:
        a.w_perc = W_PERC_VGG if vgg else W_PERC
    if a.w_style is None:
        a.w_style = W_STYLE_VGG if vgg else W_STYLE
    if vgg and a.stage in ("warmup", "e2e") and not os.path.exists(a.vgg):
        raise SystemExit(f"--features vgg: {a.vgg} missing: python -m train.vgg --wheel WHEEL --out {a.vgg}")
    a.device = Dist.init(setup_device(a.device))
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    defaults = {"ae": (1800, 16), "unet": (3000, 32), "warmup": (400, 4), "e2e": (300, 4), "decoder": (3000, 16)}
    a.steps = a.steps or defaults[a.stage][0]
    a.batch = a.batch or defaults[a.stage][1]
    if a.seed_from and not os.path.exists(os.path.join(a.run, "config.json")):
        seed_run(a.run, a.seed_from, a.recipe, unet_condition=a.unet_condition)
    cfg, model = build(a.run, a.unet_channels, a.size, a.n_embed, a.recipe)
    model.latent_size = cfg["model"]["params"]["image_size"]
    size = cfg["midms"]["image_size"]
    stage = Stage(a.run, a.stage)
    if not os.path.exists(stage.ckpt):
        load_prev(model, a.run, a.stage, a.anchor)
    model.to(a.device)
    Dist.broadcast_model(model)  # identical start on every rank (also guards against init drift)
    # Ranks draw different batches (the seed only has to differ; the folder listing may not agree).
    seed = len(os.listdir(stage.dir)) + 7919 * Dist.rank
    pairs = a.pairs or ("authors" if cfg["midms"].get("label_downsample") == "max" else "neighbours")
    if (pairs == "authors" and a.stage in ("warmup", "e2e")) or (a.stage == "unet" and model.unet_condition):
        from .pairs import PairBatches

        train = PairBatches(a.data, "train", size=size, seed=seed)
        val = PairBatches(a.data, "val", size=size, seed=1)
    else:
        train = EmojiBatches(a.data, "train", size=size, seed=seed, device=a.device)
        val = EmojiBatches(a.data, "val", size=size, seed=1, device=a.device)
    if a.stage == "ae":
        train_ae(model, a, stage, train, val)
    elif a.stage == "unet":
        train_unet(model, a, stage, train, val)
    elif a.stage == "decoder":
        train_decoder(model, a, stage, train, val)
    else:
        from .train_corr import train_corr

        train_corr(model, a, stage, train, val, warm_stage=a.stage == "warmup")
    if Dist.world > 1:
        checksum = Dist.check_in_sync(model)
        if Dist.main():
            print(f"data parallel: {Dist.world} ranks ended with identical weights (checksum {checksum:.6f})")
    Dist.finish()


if __name__ == "__main__":
    main()
