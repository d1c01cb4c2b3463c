"""`midms.unet_condition` (model v1.9): the UNet also sees the drawing on the latent grid. A model
seeded with it from an export translates exactly as the export until the unet stage trains the new
input channels; the stage trains on placed targets with their conditions; configs that cannot
carry the condition are refused."""
import json

import pytest
import torch

from train.tests.test_pairs import fake_set
from train.tests.test_train_steps import synthetic_batch, tiny_config


def v1_1_export(tmp_path):
    """A tiny model with the v1.1 recipe's settings (the fill channel the condition needs), trained-
    looking weights, exported: (the export folder, the model)."""
    from train.config import RECIPE_V1_1, corr_kwargs
    from train.export import export
    from train.midm import MIDM

    cfg = tiny_config()
    cfg["midms"].update(RECIPE_V1_1)
    torch.manual_seed(0)
    m = MIDM(cfg, **corr_kwargs(cfg))
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.05)
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    torch.save(m.state_dict(), run / "midm_e2e.pt")
    json.dump(cfg, open(run / "config.json", "w"))
    export(str(run), str(out))
    return out


def seeded_conditioned(tmp_path):
    from train.train import build, load_prev, seed_run

    out = v1_1_export(tmp_path)
    seeded = tmp_path / "seeded"
    cfg = seed_run(str(seeded), str(out), unet_condition=True)
    _, m = build(str(seeded))
    load_prev(m, str(seeded), "unet")
    return out, cfg, m.eval()


def test_a_seeded_unet_condition_translates_as_the_export_until_trained(tmp_path):
    from train.export import load_exported

    out, cfg, m = seeded_conditioned(tmp_path)
    assert cfg["midms"]["unet_condition"] and m.unet_condition
    assert cfg["model"]["params"]["unet_config"]["params"]["in_channels"] == 5
    conv = m.diff_model.model.diffusion_model.input_blocks[0][0]
    assert conv.weight.shape[1] == 5 and conv.weight[:, 3:].abs().sum() == 0
    plain, _ = load_exported(str(out))
    assert not plain.unet_condition
    b = synthetic_batch(2, 32)
    args = (b["edge"], b["ref"], b["ref_edge"])
    want, _ = plain.translate(*args, generator=torch.Generator().manual_seed(0))
    got, _ = m.translate(*args, generator=torch.Generator().manual_seed(0))
    # (equal up to the summation order of the wider convolution, through 24 UNet passes)
    assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()
    # Trained condition weights change the output, and the condition is the drawing: another
    # sketch with the same exemplar and noise gives another UNet input.
    with torch.no_grad():
        conv.weight[:, 3:].normal_(0, 0.5)
    moved, _ = m.translate(*args, generator=torch.Generator().manual_seed(0))
    assert (moved - want).abs().max() > 1e-2, (moved - want).abs().max()
    cond = m.unet_cond(b["edge"], (8, 8))
    assert cond.shape == (2, 2, 8, 8) and cond[:, 0].sum() > 0 and cond[:, 1].sum() > 0
    assert not torch.equal(cond, m.unet_cond(b["edge"].flip(3), (8, 8)))


def test_the_unet_stage_trains_the_condition_channels_on_placed_targets(tmp_path):
    from train.pairs import PairBatches
    from train.train import ConditionedTargets

    _, _, m = seeded_conditioned(tmp_path)
    (tmp_path / "data").mkdir()
    d, _ = fake_set(tmp_path / "data")
    pb = PairBatches(d, "train", size=32, seed=0)
    t = pb.targets(4)
    assert t["image"].shape == (4, 3, 32, 32) and t["edge"].shape == t["fill"].shape == (4, 1, 32, 32)
    assert t["edge"].sum() > 0 and (t["fill"] >= t["edge"]).all()  # the fill counts the lines too
    batches = ConditionedTargets(m, pb, pb, "cpu", t_max=260, n_val=4)
    z, cond = batches.val
    assert z.shape == (4, 3, 8, 8) and cond.shape == (4, 2, 8, 8)
    m.train()
    loss = batches.loss(4, torch.Generator().manual_seed(0))
    loss.backward()
    grad = m.diff_model.model.diffusion_model.input_blocks[0][0].weight.grad
    assert torch.isfinite(loss) and grad[:, 3:].abs().sum() > 0
    v1 = batches.val_loss(torch.Generator().manual_seed(7)).item()
    assert v1 == batches.val_loss(torch.Generator().manual_seed(7)).item()  # fixed validation draws


def test_unet_condition_is_refused_without_the_fill_or_the_extra_inputs():
    from train.config import corr_kwargs
    from train.midm import MIDM

    cfg = tiny_config()
    cfg["midms"]["unet_condition"] = True
    with pytest.raises(ValueError, match="unet_condition"):
        MIDM(cfg, **corr_kwargs(cfg))  # a 3-channel UNet, no fill
    cfg["model"]["params"]["unet_config"]["params"]["in_channels"] = 5
    with pytest.raises(ValueError, match="label_fill"):
        MIDM(cfg, **corr_kwargs(cfg))
    cfg["midms"]["label_fill"] = True
    MIDM(cfg, **corr_kwargs(cfg))


def test_the_end_to_end_stage_runs_the_unet_on_the_drawing(tmp_path):
    """train_corr's interleaved steps give the UNet the condition (its weights for it then get
    gradients through the translation losses)."""
    from train.train_corr import forward_train

    _, _, m = seeded_conditioned(tmp_path)
    conv = m.diff_model.model.diffusion_model.input_blocks[0][0]
    with torch.no_grad():
        conv.weight[:, 3:].normal_(0, 0.5)
    m.train()
    out = forward_train(m, synthetic_batch(2, 32), False, torch.Generator().manual_seed(0))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and conv.weight.grad[:, 3:].abs().sum() > 0


def test_warp_starts_ask_the_unet_for_the_target_from_the_samplers_own_start(tmp_path):
    """`--warp-share`: self-reference pairs, warped by the first matching exactly as the sampler's
    loop starts (regions and background fill included), noised, and the UNet's x0 estimate held
    against the target's latent."""
    from train.midm import MIDM
    from train.pairs import PairBatches
    from train.train import ConditionedTargets, warp_start, warp_start_loss
    from train.config import RECIPE_V1_1, corr_kwargs

    cfg = tiny_config()
    cfg["midms"].update(RECIPE_V1_1)
    cfg["midms"].update({"unet_condition": True, "region_matching": True, "region_open_strokes": True,
                         "background_latent": [0.5, -0.25, -0.5]})
    cfg["model"]["params"]["unet_config"]["params"]["in_channels"] = 5
    torch.manual_seed(0)
    m = MIDM(cfg, **corr_kwargs(cfg)).eval()
    (tmp_path / "data").mkdir()
    d, _ = fake_set(tmp_path / "data")
    pb = PairBatches(d, "train", size=32, seed=0)
    b = pb.self_pairs(4)
    assert torch.equal(b["idx"], b["ref_idx"]) and (b["mode"] == 0).all()
    z, warped, cond = warp_start(m, b)
    trace = {}
    m.translate(b["edge"], b["ref"], b["ref_edge"], generator=torch.Generator().manual_seed(0), trace=trace)
    assert torch.allclose(warped, trace["loop.0.hijack_feat"], atol=1e-6)
    assert torch.equal(cond, trace["unet.cond"])
    assert not torch.allclose(warped, z, atol=1e-3)  # a warp, not the target
    m.train()
    loss = warp_start_loss(m, b, torch.Generator().manual_seed(0), 60, 260)
    loss.backward()
    unet = m.diff_model.model.diffusion_model
    assert torch.isfinite(loss) and unet.input_blocks[0][0].weight.grad[:, 3:].abs().sum() > 0
    assert all(p.grad is None for p in m.seg_enc.parameters())  # the matching stays frozen
    # The stage takes its warp-start steps from self-reference pairs at the asked share.
    for share, pairs in ((1.0, True), (0.0, False)):
        batches = ConditionedTargets(m, pb, pb, "cpu", t_max=260, n_val=4, warp_share=share)
        assert torch.isfinite(batches.loss(4, torch.Generator().manual_seed(3)))
        assert (batches._pairs is not None, batches._loader is None) == (pairs, pairs)


def test_the_x0_texture_term_scores_the_decoded_estimate_against_the_decoded_target(tmp_path):
    """`--x0-texture W`: the eps-MSE plus W times the contextual loss of the UNet's decoded x0
    estimate against the decoded target, on the first N samples, with gradients into the UNet only;
    validation stays the plain eps-MSE."""
    import torch.nn.functional as F

    from train.common import randn
    from train.pairs import PairBatches
    from train.train import ConditionedTargets, diffusion_loss, x0_texture_loss

    _, _, m = seeded_conditioned(tmp_path)
    (tmp_path / "data").mkdir()
    d, _ = fake_set(tmp_path / "data")
    pb = PairBatches(d, "train", size=32, seed=0)
    z, cond = ConditionedTargets(m, pb, pb, "cpu", t_max=260, n_val=4).val
    diff = m.diff_model
    t = torch.full((4,), 200)
    noise = randn(z.shape, torch.Generator().manual_seed(1), z.device)
    x_t = diff.q_sample(z, t, noise)
    # An estimate that is the target scores lower than the same target smoothed (what the eps-MSE
    # makes of an uncertain x0): the term measures texture.
    exact = x0_texture_loss(m, z, x_t, t, noise).item()
    smooth = F.interpolate(F.avg_pool2d(z, 2), scale_factor=2, mode="bilinear")
    a, s = diff.sqrt_alphas_cumprod[t].view(-1, 1, 1, 1), diff.sqrt_one_minus_alphas_cumprod[t].view(-1, 1, 1, 1)
    eps_smooth = (x_t - a * smooth) / s  # the eps whose x0 estimate is the smoothed target
    assert exact < x0_texture_loss(m, z, x_t, t, eps_smooth).item()
    # The weighted term is added on the first n samples, under the same draws as the plain loss.
    m.train()
    m.ae.requires_grad_(False)  # as the unet stage holds it
    plain = diffusion_loss(m, z, torch.Generator().manual_seed(5), 1.0, 260, cond)
    assert torch.equal(plain, diffusion_loss(m, z, torch.Generator().manual_seed(5), 1.0, 260, cond, (0.0, 2)))
    with_tex = diffusion_loss(m, z, torch.Generator().manual_seed(5), 1.0, 260, cond, (0.5, 2))
    assert with_tex.item() > plain.item() + 1e-4
    # The term alone reaches the UNet: through the decoder and past the quantiser (straight-through).
    (with_tex - plain).backward()
    assert diff.model.diffusion_model.input_blocks[0][0].weight.grad.abs().sum() > 0
    # Training batches carry it, validation does not.
    batches = ConditionedTargets(m, pb, pb, "cpu", t_max=260, n_val=4, texture=(0.5, 2))
    plain_val = ConditionedTargets(m, pb, pb, "cpu", t_max=260, n_val=4)
    g = torch.Generator
    assert batches.val_loss(g().manual_seed(7)).item() == plain_val.val_loss(g().manual_seed(7)).item()
    assert batches.loss(4, g().manual_seed(3)).item() > plain_val.loss(4, g().manual_seed(3)).item()


def count_host_reads(monkeypatch):
    """A list that collects the name of every Tensor method called that reads values on the host
    (on CUDA each waits for the queued kernels), until `monkeypatch.undo()`."""
    reads = []
    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kw):
            reads.append(_name)
            return _original(self, *args, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


def test_a_unet_step_reads_nothing_back_from_its_tensors(tmp_path, monkeypatch):
    """What keeps a GPU busy: a training step of the unet stage (the loss with the texture term,
    backward, the guarded fused step, the EMA) never reads a tensor's value on the host, which on
    CUDA would wait for every queued kernel. Counted here on the CPU through the Tensor methods that
    read values; the batches are made beforehand, as the loader's worker processes make them."""
    from train.common import GuardedStep, WeightEma
    from train.pairs import PairBatches
    from train.train import ConditionedTargets

    _, _, m = seeded_conditioned(tmp_path)
    (tmp_path / "data").mkdir()
    d, _ = fake_set(tmp_path / "data")
    pb = PairBatches(d, "train", size=32, seed=0)
    targets = ConditionedTargets(m, pb, pb, "cpu", t_max=260, n_val=4, texture=(0.01, 2))
    batches = [targets._latents(pb.targets(4)) for _ in range(3)]
    unet = m.diff_model.model.diffusion_model
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.0, fused=True)  # `adam` on CUDA
    guard = GuardedStep(opt, unet.parameters(), "ckpt.pt")
    ema = WeightEma(unet.state_dict(), str(tmp_path / "ema.pt"))
    before = {k: v.clone() for k, v in unet.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    m.train()

    reads = count_host_reads(monkeypatch)
    for step, batch in enumerate(batches):
        loss = targets.loss(4, g, batch)
        opt.zero_grad()
        loss.backward()
        assert guard(step)
        ema.update(0.99)
    monkeypatch.undo()
    assert reads == []
    assert any(not torch.equal(v, before[k]) for k, v in unet.state_dict().items())  # it did train
    assert torch.isfinite(loss)


def test_an_end_to_end_step_reads_nothing_back_after_the_first(tmp_path, monkeypatch):
    """The same for train_corr's step (warm-up and interleaved, region matching and colour transfer
    on, as the shipped recipe trains): after the first step, which makes the DDIM schedule, nothing
    is read back. It made the schedule every step and copied four schedule values to the device per
    DDIM step."""
    from train.common import GuardedStep
    from train.pairs import PairBatches
    from train.train_corr import forward_train

    _, _, m = seeded_conditioned(tmp_path)
    assert m.region_matching
    (tmp_path / "data").mkdir()
    d, _ = fake_set(tmp_path / "data")
    pb = PairBatches(d, "train", size=32, seed=0)
    batches = [pb.batch(4) for _ in range(3)]
    opt = torch.optim.Adam(m.iter_enc.parameters(), lr=1e-4, fused=True)
    guard = GuardedStep(opt, m.iter_enc.parameters(), "ckpt.pt")
    m.train()
    forward_train(m, batches[0], False, torch.Generator().manual_seed(0), iter_align=10)

    reads = count_host_reads(monkeypatch)
    for step, (warm, batch) in enumerate(zip((True, False, False), batches)):
        out = forward_train(m, batch, warm, torch.Generator().manual_seed(step), iter_align=10)
        opt.zero_grad()
        out["loss"].backward()
        guard(step)
    monkeypatch.undo()
    assert reads == []
    assert torch.isfinite(out["loss"])
