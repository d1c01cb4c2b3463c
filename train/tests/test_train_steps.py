"""One optimiser step of each training stage decreases that stage's loss on a fixed batch."""
import random

import numpy as np
import pytest
import torch

from train.config import corr_kwargs, default_config
from train.data import edge_map
from train.midm import MIDM
from train.train import ae_losses, decoder_losses, diffusion_loss, normalize_latent_scale
from train.train_corr import corr_parameters, forward_train


def tiny_config(unet_channels=32):
    cfg = default_config()
    p = cfg["model"]["params"]
    p["image_size"] = 8
    p["unet_config"]["params"].update(image_size=8, channel_mult=[1, 2], attention_resolutions=[2],
                                      model_channels=unet_channels)
    p["first_stage_config"]["params"]["n_embed"] = 64
    p["first_stage_config"]["params"]["ddconfig"]["resolution"] = 32
    return cfg


def tiny_model(unet_channels=32):
    torch.manual_seed(0)
    cfg = tiny_config(unet_channels)
    return MIDM(cfg, **corr_kwargs(cfg))


def synthetic_batch(n=2, size=32, seed=0):
    """White images with a coloured disc and a bar (emoji-like), their edges, and exemplars."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]

    def one():
        im = np.full((size, size, 3), 255, np.uint8)
        cx, cy, r = rng.uniform(10, 22, 2).tolist() + [rng.uniform(5, 9)]
        im[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 200, 3)
        y0 = int(rng.integers(2, size - 6))
        im[y0:y0 + 3, 4:size - 4] = rng.integers(0, 200, 3)
        return im

    ims = [one() for _ in range(2 * n)]
    t = lambda a: torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 127.5 - 1
    e = lambda a: torch.from_numpy(np.stack([edge_map(x) for x in a]))[:, None]
    return {"image": t(ims[:n]), "edge": e(ims[:n]), "ref": t(ims[n:]), "ref_edge": e(ims[n:])}


def adam_step(params, loss, lr):
    opt = torch.optim.Adam(params, lr=lr)
    opt.zero_grad()
    loss.backward()
    opt.step()


def test_ae_step_decreases_loss():
    m = tiny_model()
    x = synthetic_batch()["image"]
    before = ae_losses(m.ae, x)[0]["loss"]
    adam_step(list(m.ae.parameters()), before, 1e-4)
    after = ae_losses(m.ae, x)[0]["loss"]
    assert after.item() < before.item()


def test_an_anchored_ae_step_starts_at_its_anchor_and_decreases_the_loss():
    """`train.train ae --anchor A --w-ab W` on a run seeded from an export: the anchor term is the
    MSE to the exported encoder's latents (exactly 0 before the first step), the colour term is
    positive for an imperfect reconstruction, and a step lowers the sum."""
    import copy

    m = tiny_model()
    x = synthetic_batch()["image"]
    frozen = copy.deepcopy(m.ae).requires_grad_(False)
    before = ae_losses(m.ae, x, frozen.encode, 0.3, 1.0)[0]
    assert before["anchor"].item() == 0 and before["ab"].item() > 0
    adam_step(list(m.ae.parameters()), before["loss"], 1e-4)
    after = ae_losses(m.ae, x, frozen.encode, 0.3, 1.0)[0]
    assert after["loss"].item() < before["loss"].item()
    assert after["anchor"].item() > 0  # the encoder moved, and the term sees it


def test_latent_rescale_is_exact():
    m = tiny_model().eval()
    x = synthetic_batch()["image"]
    with torch.no_grad():
        rec0 = m.ae.decode_noquant(m.ae.encode(x))
        normalize_latent_scale(m.ae, x)
        z = m.ae.encode(x)
        rec1 = m.ae.decode_noquant(z)
    assert z.std().item() == pytest.approx(1.0, rel=1e-4)
    assert (rec0 - rec1).abs().max().item() < 1e-4


def test_decoder_step_decreases_loss():
    m = tiny_model().eval()
    x = synthetic_batch()["image"]
    with torch.no_grad():
        zq = m.ae.quantize(m.ae.encode(x))[0]
    before = decoder_losses(m.ae, zq, x)[0]["loss"]
    adam_step(list(m.ae.decoder.parameters()) + list(m.ae.post_quant_conv.parameters()), before, 1e-4)
    after = decoder_losses(m.ae, zq, x)[0]["loss"]
    assert after.item() < before.item()


def test_decoder_colour_term_is_weighted_into_the_loss_and_lowered_by_a_step():
    """`train.train decoder --w-ab W`: the a*b* term enters the loss with weight W (and is logged
    at weight 0), and a step on it lowers it."""
    m = tiny_model().eval()
    x = synthetic_batch()["image"]
    with torch.no_grad():
        zq = m.ae.quantize(m.ae.encode(x))[0]
    plain, with_ab = decoder_losses(m.ae, zq, x)[0], decoder_losses(m.ae, zq, x, w_ab=2.0)[0]
    assert plain["ab"].item() > 0
    assert with_ab["loss"].item() == pytest.approx(plain["loss"].item() + 2.0 * plain["ab"].item(), rel=1e-5)
    params = list(m.ae.decoder.parameters()) + list(m.ae.post_quant_conv.parameters())
    adam_step(params, decoder_losses(m.ae, zq, x, w_ab=100.0)[0]["loss"], 1e-5)
    assert decoder_losses(m.ae, zq, x)[0]["ab"].item() < plain["ab"].item()


def test_unet_step_decreases_loss():
    m = tiny_model()
    with torch.no_grad():
        z = m.ae.encode(synthetic_batch(4)["image"])
    unet = m.diff_model.model.diffusion_model
    before = diffusion_loss(m, z, torch.Generator().manual_seed(3))
    adam_step(list(unet.parameters()), before, 1e-3)
    after = diffusion_loss(m, z, torch.Generator().manual_seed(3))
    assert after.item() < before.item()


@pytest.mark.parametrize("warm", [True, False])
def test_corr_step_decreases_loss(warm):
    m = tiny_model()
    m.train()
    m.ae.eval()
    b = synthetic_batch()

    def loss():
        random.seed(0)
        return forward_train(m, b, warm, torch.Generator().manual_seed(5))["loss"]

    before = loss()
    params = corr_parameters(m) + ([] if warm else list(m.diff_model.model.diffusion_model.parameters()))
    adam_step(params, before, 1e-4)
    after = loss()
    assert after.item() < before.item()


def tiny_v2_model():
    from train.config import apply_recipe

    torch.manual_seed(0)
    cfg = apply_recipe(tiny_config(), "v2")
    return MIDM(cfg, **corr_kwargs(cfg))


def test_v2_warmup_trains_the_iteration_encoder_and_decreases_loss():
    """Model v2's warm-up (`--warm-iter`): F_Y^iter gets gradients (the authors' warm-up leaves it
    untouched) and one step lowers the loss; labels reach the latent grid max-pooled."""
    m = tiny_v2_model()
    assert m.label_downsample == "max" and m.seg_enc is not None
    m.train()
    m.ae.eval()
    b = synthetic_batch()

    def loss():
        random.seed(0)
        return forward_train(m, b, True, torch.Generator().manual_seed(5), warm_iter=1.0)["loss"]

    before = loss()
    before.backward()
    grads = [p.grad for p in m.iter_enc.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
    m.zero_grad()
    plain = forward_train(m, b, True, torch.Generator().manual_seed(5))["loss"]
    plain.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.iter_enc.parameters())
    m.zero_grad()
    adam_step(corr_parameters(m), loss(), 1e-4)
    assert loss().item() < before.item()


def test_bf16_autocast_keeps_matching_in_f32_and_trains():
    """`--amp bf16`: convolutions run in bf16, but correlation, soft warp and the contextual loss
    come out float32 (ops.full_precision), and a warm-up and an e2e step give finite losses."""
    from train.losses import contextual_loss
    from train.ops import correlation, soft_warp

    q = torch.randn(1, 8, 4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        conv = torch.nn.functional.conv2d(q, torch.randn(8, 8, 1, 1))
        c = correlation(conv, conv)
        w = soft_warp(conv, c)
        cx = contextual_loss(conv, conv)
    assert conv.dtype == torch.bfloat16
    assert c.dtype == w.dtype == cx.dtype == torch.float32
    m = tiny_v2_model()
    m.train()
    m.ae.eval()
    b = synthetic_batch()
    for warm in (True, False):
        random.seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            o = forward_train(m, b, warm, torch.Generator().manual_seed(5), warm_iter=1.0)
        o["loss"].backward()
        assert torch.isfinite(o["loss"]) and o["loss"].dtype == torch.float32
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in m.parameters())
        m.zero_grad()


def test_training_matches_by_region_when_the_model_does():
    """A model with `region_matching` trains its matching networks under the restriction the
    sampler applies: training_regions takes the batch's shapes (or computes them), and warm-up and
    end-to-end steps run and train through the restricted matching."""
    from train.ops import exemplar_foreground, fill_label, region_cells
    from train.train_corr import training_regions

    m = tiny_model()
    batch = synthetic_batch()
    assert training_regions(m, batch, (8, 8)) == (None, None)
    m.region_matching = True
    src, ref = training_regions(m, batch, (8, 8))
    assert torch.equal(src[0], region_cells(fill_label(batch["edge"]), (8, 8)))
    assert torch.equal(ref[1], region_cells(exemplar_foreground(batch["ref"]), (8, 8)))
    # Precomputed shapes (train.pairs makes them in its workers) are used as given.
    given = dict(batch, src_fg=torch.zeros_like(batch["edge"]))
    assert training_regions(m, given, (8, 8))[0][1].sum() == 0
    # The warm-up with F_Y^iter trained (model v2's) and an end-to-end step both re-match by region.
    for warm, warm_iter in ((True, 1.0), (False, 0.0)):
        m.zero_grad()
        out = forward_train(m, batch, warm=warm, g=torch.Generator().manual_seed(0), warm_iter=warm_iter)
        assert torch.isfinite(out["loss"])
        out["loss"].backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.seg_enc.parameters())
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.iter_enc.parameters())
    # A photo-like exemplar (noise: no white outside) with a background latent: the warps are filled.
    m.background_latent = [0.5, -0.5, -1.0]
    photo = dict(batch, ref=torch.rand(batch["ref"].shape, generator=torch.Generator().manual_seed(1)) * 1.6 - 1)
    out = forward_train(m, photo, warm=True, g=torch.Generator().manual_seed(0), warm_iter=1.0)
    assert torch.isfinite(out["loss"])
    # Model v1.5's refinements: open strokes count as inside (the bars' outlines enclose nothing
    # wide enough), and the end-to-end step mixes with the outside kept (a larger mask).
    from train.ops import target_cells

    m.background_latent = None
    plain = training_regions(m, batch, (8, 8))[0][0]
    m.region_open_strokes = True
    with_strokes = training_regions(m, batch, (8, 8))[0][0]
    assert torch.equal(with_strokes, target_cells(batch["edge"], (8, 8), open_strokes=True))
    assert (with_strokes >= plain).all() and with_strokes.sum() > plain.sum()
    mask_mean = {}
    for keep in (False, True):
        m.region_keep_outside = keep
        random.seed(0)
        out = forward_train(m, batch, warm=False, g=torch.Generator().manual_seed(0))
        assert torch.isfinite(out["loss"])
        mask_mean[keep] = float(out["mask_mean"])
    assert mask_mean[True] > mask_mean[False], mask_mean


def test_train_nets_trains_the_named_networks_and_keeps_the_others_exact():
    """`--train-nets iter_enc`: end-to-end steps change F_Y^iter only; every other matching network
    keeps its weights and its spectral norm's u vectors (which a network left in train mode would
    update at each forward, so the first matching, and with it the no-interleaving translation,
    would drift)."""
    from train.config import CORR_NETS
    from train.train_corr import freeze

    m = tiny_v2_model()
    frozen = [n for n in CORR_NETS if n != "iter_enc"]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    freeze(m, frozen)
    params = corr_parameters(m, ("iter_enc",))
    assert params and all(p.requires_grad for p in params)
    opt = torch.optim.Adam(params, lr=1e-3)
    for step in range(2):
        m.train()
        m.ae.eval()
        freeze(m, frozen)
        random.seed(step)
        out = forward_train(m, synthetic_batch(seed=step), False, torch.Generator().manual_seed(step), iter_align=1.0)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    after = {k: v.clone() for k, v in m.state_dict().items()}
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"iter_enc"}
    assert any(k.endswith("weight_u") for k in before if k.startswith("seg_enc."))  # what freeze guards
    # Without freeze's eval mode, a forward alone moves the frozen networks' u vectors.
    m.train()
    forward_train(m, synthetic_batch(seed=3), False, torch.Generator().manual_seed(3))
    assert any(not torch.equal(after[k], v) for k, v in m.state_dict().items() if k.startswith("seg_enc."))
