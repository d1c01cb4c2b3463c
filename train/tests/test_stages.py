"""Stage bookkeeping: resuming keeps the command line's learning rates; the unet stage takes only the
autoencoder from the previous stage, so a run may choose another UNet width."""
import pytest
import torch

from train.common import Stage
from train.train import load_prev
from train.tests.test_train_steps import tiny_model


def test_resume_keeps_the_command_lines_learning_rate(tmp_path):
    m = tiny_model()
    params = list(m.ae.parameters())
    opt = torch.optim.Adam(params, lr=3e-4)
    params[0].grad = torch.ones_like(params[0])
    opt.step()
    stage = Stage(str(tmp_path), "ae")
    stage.save(m, opt, step=7, elapsed=12.5)

    opt2 = torch.optim.Adam(list(m.ae.parameters()), lr=1e-4)
    step, elapsed = stage.resume(m, opt2)
    assert (step, elapsed) == (7, 12.5)
    assert opt2.param_groups[0]["lr"] == 1e-4
    # The moments come back with the state.
    assert opt2.state_dict()["state"][0]["step"].item() == 1


def test_unet_stage_takes_only_the_autoencoder(tmp_path):
    src = tiny_model()
    with torch.no_grad():  # a trained autoencoder, unlike the fresh one the wide model starts with
        for p in src.ae.parameters():
            p.add_(0.5)
    torch.save(src.state_dict(), tmp_path / "midm_ae.pt")
    wide = tiny_model(unet_channels=64)
    before = {k: v.clone() for k, v in wide.state_dict().items() if k.startswith("diff_model.model.")}
    load_prev(wide, str(tmp_path), "unet")
    sd = wide.state_dict()
    for k, v in src.state_dict().items():
        if k.startswith("diff_model.first_stage_model."):
            assert torch.equal(sd[k], v), k
    for k, v in before.items():
        assert torch.equal(sd[k], v), k



def test_a_run_folder_fixes_its_size_codebook_and_width(tmp_path):
    from train.train import build

    cfg, model = build(str(tmp_path), size=128, n_embed=2048)
    p = cfg["model"]["params"]
    assert p["first_stage_config"]["params"]["ddconfig"]["resolution"] == 128
    assert p["image_size"] == p["unet_config"]["params"]["image_size"] == 32
    assert model.ae.quantize.embedding.num_embeddings == 2048
    # Reopening the folder keeps its config; asking for another size is refused, not ignored.
    cfg2, _ = build(str(tmp_path))
    assert cfg2 == cfg
    for kw in ({"size": 64}, {"n_embed": 512}, {"unet_channels": 64}):
        try:
            build(str(tmp_path), **kw)
        except SystemExit as e:
            assert "applies to new runs only" in str(e)
        else:
            raise AssertionError(f"{kw} was accepted for an existing run")


def test_a_128_model_translates_at_128():
    from train.config import corr_kwargs, default_config
    from train.midm import MIDM

    cfg = default_config(128)
    torch.manual_seed(0)
    model = MIDM(cfg, **corr_kwargs(cfg)).eval()
    edge = (torch.rand(1, 1, 128, 128) < 0.1).float()
    ref = torch.rand(1, 3, 128, 128) * 2 - 1
    out, mask = model.translate(edge, ref, edge, steps=8, refine_steps=20, refine_hijack=18,
                                generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 3, 128, 128) and mask.shape[-2:] == (32, 32)


def test_batches_live_on_the_requested_device_and_draw_the_same_numbers(tmp_path):
    """The CPU generator draws the indices and augmentation, so a run on another device sees the same
    batches (checked here against a second CPU instance; on a GPU the tensors move, the draws do not)."""
    import numpy as np

    from train.common import EmojiBatches

    rng = np.random.default_rng(0)
    n = 20
    np.savez_compressed(tmp_path / "emoji64.npz", images=rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
                        edges=(rng.random((n, 64, 64)) < 0.1).astype(np.uint8),
                        split=np.array([0] * 15 + [1] * 5, np.uint8),
                        candidates=rng.integers(0, n, (n, 6)), names=np.array([f"g{i}" for i in range(n)]),
                        keys=np.arange(n))
    a = EmojiBatches(str(tmp_path), "train", seed=3, device="cpu").batch(8)
    b = EmojiBatches(str(tmp_path), "train", seed=3, device=torch.device("cpu")).batch(8)
    for k in ("image", "edge", "ref", "ref_edge"):
        assert a[k].device.type == "cpu" and torch.equal(a[k], b[k]), k


def test_cuda_without_a_gpu_is_a_clear_error():
    from train.common import setup_device

    if torch.cuda.is_available():
        return
    try:
        setup_device("cuda")
    except SystemExit as e:
        assert "no CUDA device" in str(e)
    else:
        raise AssertionError("setup_device('cuda') accepted a machine without CUDA")


def test_export_takes_the_unet_width_included_from_another_run(tmp_path):
    """`train.export --unet-from B`: the UNet (and its width in config.yaml) from run B, everything
    else from run A, and the result loads as one model."""
    import json

    from train.config import CORR_PREFIXES
    from train.export import export, load_exported
    from train.tests.test_train_steps import tiny_config

    run_a, run_b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    run_a.mkdir()
    run_b.mkdir()
    a = tiny_model()
    with torch.no_grad():  # make A's correspondence weights recognisable
        for n, p in a.named_parameters():
            if n.startswith(CORR_PREFIXES):
                p.add_(0.25)
    torch.save(a.state_dict(), run_a / "midm_e2e.pt")
    json.dump(tiny_config(), open(run_a / "config.json", "w"))
    b = tiny_model(unet_channels=64)
    torch.save(b.state_dict(), run_b / "midm_unet.pt")
    json.dump(tiny_config(unet_channels=64), open(run_b / "config.json", "w"))

    which, _ = export(str(run_a), str(out), unet_from=str(run_b))
    assert which.startswith("e2e+unet of")
    model, cfg = load_exported(str(out))
    assert cfg["model"]["params"]["unet_config"]["params"]["model_channels"] == 64
    sd = model.state_dict()
    for k, v in b.state_dict().items():
        if k.startswith("diff_model.model.diffusion_model."):
            assert torch.equal(sd[k], v), k
    for k, v in a.state_dict().items():
        if not k.startswith("diff_model.model.diffusion_model."):
            assert torch.equal(sd[k], v), k


def seeded_from_a_trained_export(tmp_path):
    """A tiny model with trained-looking weights, exported and seeded into a new run folder:
    (the model, the export folder, the seeded run folder)."""
    import json

    from train.export import export
    from train.tests.test_train_steps import tiny_config
    from train.train import seed_run

    run_a, out, seeded = tmp_path / "a", tmp_path / "out", tmp_path / "seeded"
    run_a.mkdir()
    a = tiny_model()
    with torch.no_grad():  # trained weights, unlike a fresh model's
        for p in a.parameters():
            p.add_(0.125)
    torch.save(a.state_dict(), run_a / "midm_e2e.pt")
    json.dump(tiny_config(), open(run_a / "config.json", "w"))
    export(str(run_a), str(out))
    seed_run(str(seeded), str(out))
    return a, out, seeded


def test_a_run_seeded_from_an_export_continues_its_weights(tmp_path):
    """`train.pipeline --init-from`: every stage starts from the exported weights, the e2e stage
    takes the UNet the run's own unet stage trained, and the autoencoder stage is refused."""
    from train.train import seed_run

    a, out, seeded = seeded_from_a_trained_export(tmp_path)
    fresh = tiny_model()
    load_prev(fresh, str(seeded), "unet")
    for k, v in a.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k

    newer = tiny_model()
    with torch.no_grad():
        for p in newer.parameters():
            p.sub_(0.5)
    torch.save(newer.state_dict(), seeded / "midm_unet.pt")
    e2e = tiny_model()
    load_prev(e2e, str(seeded), "e2e")
    for k, v in e2e.state_dict().items():
        want = (newer if k.startswith("diff_model.model.diffusion_model.") else a).state_dict()[k]
        assert torch.equal(v, want), k

    for stage, folder, why in (("ae", seeded, "stays frozen"), (None, seeded, "already holds a run")):
        try:
            load_prev(tiny_model(), str(folder), stage) if stage else seed_run(str(folder), str(out))
        except SystemExit as e:
            assert why in str(e)
        else:
            raise AssertionError(f"{stage or 'seeding twice'} was accepted")


def test_an_anchored_autoencoder_fine_tune_carries_into_the_later_stages(tmp_path):
    """A seeded run refuses a plain ae stage but takes an anchored one (`--anchor`), which starts from
    the exported weights; the later stages then take that stage's autoencoder and the export's rest."""
    from train.config import AE_PREFIX

    a, _, seeded = seeded_from_a_trained_export(tmp_path)

    ae_start = tiny_model()
    load_prev(ae_start, str(seeded), "ae", anchor=0.3)
    for k, v in a.state_dict().items():
        assert torch.equal(ae_start.state_dict()[k], v), k

    tuned = tiny_model()
    tuned.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p in tuned.ae.parameters():
            p.mul_(0.5)
    torch.save(tuned.state_dict(), seeded / "midm_ae.pt")
    for stage in ("unet", "decoder", "e2e"):
        later = tiny_model()
        load_prev(later, str(seeded), stage)
        for k, v in later.state_dict().items():
            want = (tuned if k.startswith(AE_PREFIX) else a).state_dict()[k]
            assert torch.equal(v, want), (stage, k)


def test_a_non_finite_gradient_skips_the_step_instead_of_poisoning_the_weights():
    from train.common import GuardedStep

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1)
    step = GuardedStep(opt, [w], "ckpt.pt", max_skipped=2)
    (w * torch.tensor([1.0, float("inf"), 1.0])).sum().backward()
    assert not step(0)
    assert torch.equal(w.detach(), torch.ones(3)) and not opt.state  # no step, no Adam moments
    opt.zero_grad()
    (w * 2).sum().backward()
    assert step(1)
    assert (w.detach() < 1).all()
    assert gives_up_on_the_third_bad_batch_in_a_row(step, w, opt, 2) == [False, False]


def gives_up_on_the_third_bad_batch_in_a_row(guard, w, opt, step):
    """Feeds `guard` (max_skipped 2) non-finite batches from `step` on: the third in a row must end
    the stage, the weights finite. Returns what the guard said for the first two."""
    said = []
    for i in range(3):
        opt.zero_grad()
        (w * float("nan")).sum().backward()
        if i < 2:
            said.append(guard(step + i))
    try:
        guard(step + 2)
    except SystemExit as e:
        assert "3 batches in a row" in str(e) and "ckpt.pt" in str(e)
    else:
        raise AssertionError("a third non-finite batch in a row was accepted")
    assert w.isfinite().all()
    return said


def test_a_fused_optimiser_skips_non_finite_steps_on_the_device():
    """The sync-free guard (a fused optimiser, as `adam` makes on CUDA; fused runs on the CPU too):
    a skipped batch leaves weights, moments and step count as they were, a good one steps exactly as
    the plain optimiser, and too many in a row give up at the next check."""
    from train.common import GuardedStep

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w], lr=0.1, fused=True)
    step = GuardedStep(opt, [w], "ckpt.pt", max_skipped=2, check_every=1)
    assert step.on_device
    (w * 2).sum().backward()
    assert step(0)
    after_one = w.detach().clone()
    moments = {k: v.clone() for k, v in opt.state[w].items()}
    opt.zero_grad()
    (w * torch.tensor([1.0, float("inf"), 1.0])).sum().backward()
    assert step(1)  # stepped as far as the loop knows, skipped on the device
    assert torch.equal(w.detach(), after_one)
    assert all(torch.equal(v, moments[k]) for k, v in opt.state[w].items())
    opt.zero_grad()
    (w * 2).sum().backward()
    step(2)
    ref = torch.nn.Parameter(torch.ones(3))
    plain = torch.optim.Adam([ref], lr=0.1)
    for _ in range(2):
        plain.zero_grad()
        (ref * 2).sum().backward()
        torch.nn.utils.clip_grad_norm_([ref], 1.0)
        plain.step()
    assert torch.allclose(w.detach(), ref.detach(), atol=1e-6)  # as if the bad batch never came
    assert gives_up_on_the_third_bad_batch_in_a_row(step, w, opt, 3) == [True, True]  # see the docstring


def test_draws_reach_the_device_unchanged():
    from train.common import randint, randn, to_device

    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(randn((2, 3), g1, "cpu"), torch.randn((2, 3), generator=g2))
    assert torch.equal(randint(7, (5,), g1, "cpu"), torch.randint(7, (5,), generator=g2))
    x = torch.arange(4)
    assert to_device(x, "cpu") is x


def test_f16_export_loads_and_keeps_the_schedule_in_f32(tmp_path):
    import json

    from safetensors.torch import load_file

    from train.export import export, load_exported
    from train.tests.test_train_steps import tiny_config

    run = tmp_path / "run"
    run.mkdir()
    a = tiny_model()
    torch.save(a.state_dict(), run / "midm_e2e.pt")
    json.dump(tiny_config(), open(run / "config.json", "w"))
    export(str(run), str(tmp_path / "f16"), dtype="f16")
    raw = load_file(str(tmp_path / "f16" / "model.safetensors"))
    assert raw["diff_model.betas"].dtype == torch.float32
    assert raw["seg_enc.layer1.0.weight_orig"].dtype == torch.float16
    assert raw["diff_model.first_stage_model.quantize.embedding.weight"].dtype == torch.float16
    model, _ = load_exported(str(tmp_path / "f16"))
    for k, v in a.state_dict().items():
        got = model.state_dict()[k]
        assert got.dtype == v.dtype and torch.allclose(got, v, rtol=1e-3, atol=1e-4), k


def test_export_sets_the_inference_settings_of_our_models(tmp_path):
    """`--colour-transfer`, `--colour-temperature`, `--refine-eta`, `--keep-outside` and `--colour-gamut` reach the
    exported config.yaml, and the model loaded from it uses them; unset, the run's are kept."""
    import json

    import yaml

    from train.export import export, load_exported
    from train.tests.test_train_steps import tiny_config

    run = tmp_path / "run"
    run.mkdir()
    torch.save(tiny_model().state_dict(), run / "midm_e2e.pt")
    json.dump(tiny_config(), open(run / "config.json", "w"))
    export(str(run), str(tmp_path / "plain"))
    plain, _ = load_exported(str(tmp_path / "plain"))
    assert not plain.colour_transfer and plain.colour_temperature == 0.005 and plain.refine_eta == 1.0
    export(str(run), str(tmp_path / "ours"), colour_transfer=True, colour_temperature=0.001, refine_eta=0.0)
    midms = yaml.safe_load(open(tmp_path / "ours" / "config.yaml"))["midms"]
    assert midms["colour_transfer"] is True and midms["colour_temperature"] == 0.001 and midms["refine_eta"] == 0.0
    ours, _ = load_exported(str(tmp_path / "ours"))
    assert ours.colour_transfer and ours.colour_temperature == 0.001 and ours.refine_eta == 0.0
    # `--keep-outside off` (measured for model v1.10): region_keep_outside alone off, after --region-matching on.
    export(str(run), str(tmp_path / "kept"), region_matching=True, keep_outside=False)
    kept, _ = load_exported(str(tmp_path / "kept"))
    assert kept.region_matching and kept.region_open_strokes and not kept.region_keep_outside
    # `--colour-gamut scale` (model v1.11); unset, clip.
    assert plain.colour_gamut == "clip" and ours.colour_gamut == "clip"
    export(str(run), str(tmp_path / "scaled"), colour_gamut="scale")
    assert yaml.safe_load(open(tmp_path / "scaled" / "config.yaml"))["midms"]["colour_gamut"] == "scale"
    assert load_exported(str(tmp_path / "scaled"))[0].colour_gamut == "scale"
    with pytest.raises(ValueError, match="colour_gamut"):
        export(str(run), str(tmp_path / "bad"), colour_gamut="clamp")


@pytest.mark.parametrize("shipped", ["v1", "v1.1"])
def test_a_v1_or_v1_1_export_seeds_a_v2_run_with_new_correspondence_networks(tmp_path, shipped):
    """`train.pipeline --init-from weights --recipe v2`: autoencoder, UNet and decoder carry over,
    the wider correspondence networks start fresh, and e2e waits for their warm-up. Model v1.1
    already has v2's max-pooled, filled conditions; its narrow networks must not carry over."""
    import json

    from train.config import CORR_PREFIXES, apply_recipe, corr_kwargs, recipe_of
    from train.export import export
    from train.midm import MIDM
    from train.tests.test_train_steps import tiny_config, tiny_v2_model
    from train.train import seed_run

    run, out, seeded = tmp_path / "a", tmp_path / "out", tmp_path / "seeded"
    run.mkdir()
    cfg = apply_recipe(tiny_config(), shipped)
    assert recipe_of(cfg) == shipped
    torch.manual_seed(0)
    a = MIDM(cfg, **corr_kwargs(cfg))
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.125)
    torch.save(a.state_dict(), run / "midm_e2e.pt")
    json.dump(cfg, open(run / "config.json", "w"))
    export(str(run), str(out))
    cfg = seed_run(str(seeded), str(out), recipe="v2")
    assert recipe_of(cfg) == "v2" and cfg["midms"]["N_CH"] == 64 and cfg["midms"]["label_fill"]
    warm = tiny_v2_model()
    fresh = {k: v.clone() for k, v in warm.state_dict().items()}
    load_prev(warm, str(seeded), "warmup")
    for k, v in warm.state_dict().items():
        want = fresh[k] if k.startswith(CORR_PREFIXES) else a.state_dict()[k]
        assert torch.equal(v, want), k
    try:
        load_prev(tiny_v2_model(), str(seeded), "e2e")
    except SystemExit as e:
        assert "correspondence networks are new" in str(e)
    else:
        raise AssertionError("e2e started on untrained correspondence networks")
    # `train.pipeline --ae-anchor`: the anchored autoencoder stage starts from the same weights
    # (its fresh correspondence networks are not its business).
    ae_start = tiny_v2_model()
    load_prev(ae_start, str(seeded), "ae", anchor=0.3)
    for k, v in ae_start.state_dict().items():
        if not k.startswith(CORR_PREFIXES):
            assert torch.equal(v, a.state_dict()[k]), k


def test_a_stage_finishes_with_its_best_validation_weights(tmp_path):
    stage = Stage(str(tmp_path), "warmup")
    m = tiny_model()
    stage.keep_best(m, 0.5, step=100)
    good = {k: v.clone() for k, v in m.state_dict().items()}
    with torch.no_grad():
        for p in m.parameters():
            p.add_(1.0)
    stage.keep_best(m, 0.4, step=200)  # worse: not kept
    assert stage.finish(m, best=True)["step"] == 100
    saved = torch.load(stage.model_out)
    for k, v in good.items():
        assert torch.equal(saved[k], v), k
    # a resumed stage (new Stage object) still knows the best score
    again = Stage(str(tmp_path), "warmup")
    again.keep_best(m, 0.45, step=300)
    assert again.finish(m, best=True)["step"] == 100
    assert Stage(str(tmp_path / "other"), "warmup").finish(m, best=True) is None  # none kept: current weights


def test_corr_ema_averages_the_matching_networks_and_swaps_them_in_only_for_validation(tmp_path):
    """`--corr-ema D`: avg <- D avg + (1 - D) live after each step, over the matching networks only;
    `applied()` puts the average in for validation and best.pt and the live weights back after it;
    the average survives a restart."""
    from train.train_corr import CORR_NETS, CorrEma

    m = tiny_model()
    path = str(tmp_path / "corr_ema.pt")
    ema = CorrEma(m, 0.75, path)
    assert ema.names and all(n.split(".")[0] in CORR_NETS for n in ema.names)
    p, start = ema.params[0], ema.params[0].detach().clone()
    unet_w = next(m.diff_model.model.diffusion_model.parameters())
    with torch.no_grad():
        p.add_(4.0)
    ema.update()
    assert torch.allclose(ema.avg[0], start + 1.0)  # 0.75 start + 0.25 (start + 4)
    with ema.applied():
        assert torch.allclose(p, start + 1.0)
        stage = Stage(str(tmp_path), "e2e")
        stage.keep_best(m, 1.0, step=1)
    assert torch.allclose(p, start + 4.0)  # live weights back
    name = ema.names[0]
    assert torch.allclose(torch.load(tmp_path / "e2e" / "best.pt")["model"][name], start + 1.0)
    assert not any(unet_w is q for q in ema.params)
    ema.save()
    again = CorrEma(m, 0.75, path)
    assert torch.equal(again.avg[0], ema.avg[0])
    off = CorrEma(m, 0.0, path)  # off: nothing averaged, nothing swapped
    off.update()
    with off.applied():
        assert torch.allclose(p, start + 4.0)


def test_val_score_rewards_following_the_sketch_in_the_exemplars_colours():
    from train.train_corr import val_score

    edge = torch.zeros(2, 1, 32, 32)
    edge[:, :, 8, 8:24] = edge[:, :, 23, 8:24] = edge[:, :, 8:24, 8] = edge[:, :, 8:24, 23] = 1
    red = torch.full((2, 3, 32, 32), 1.0)
    red[:, 0, 8:24, 8:24], red[:, 1:, 8:24, 8:24] = 1.0, -1.0
    good = red.clone()
    blob = torch.full((2, 3, 32, 32), 1.0)
    blob[:, 1, 2:12, 18:30], blob[:, 0, 2:12, 18:30], blob[:, 2, 2:12, 18:30] = 1.0, -1.0, -1.0  # green, elsewhere
    b = {"edge": edge, "ref": red}
    assert val_score(good, b) > val_score(blob, b) + 1.0


def tiny_emoji_set(tmp_path, seed):
    """The training split (4 of 6 random 32x32 glyphs) of an emoji32.npz written into tmp_path."""
    import numpy as np

    from train.common import EmojiBatches

    rng = np.random.default_rng(seed)
    n = 6
    np.savez_compressed(tmp_path / "emoji32.npz", images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                        edges=(rng.random((n, 32, 32)) < 0.1).astype(np.uint8), split=np.array([0] * 4 + [1] * 2, np.uint8),
                        candidates=rng.integers(0, n, (n, 6)), names=np.array([f"g{i}" for i in range(n)]),
                        keys=np.arange(n))
    return EmojiBatches(str(tmp_path), "train", size=32, seed=0)


def test_the_training_set_is_encoded_from_uint8_images(tmp_path):
    """EmojiBatches keeps uint8 images (a quarter of float32's memory); the unet/decoder stages'
    one-off encoding gives the latents of the [-1, 1] images and their mirror images."""
    from train.train import encode_training_set

    tr = tiny_emoji_set(tmp_path, seed=1)
    assert tr.images.dtype == torch.uint8
    m = tiny_model().eval()
    imgs, z = encode_training_set(m.ae, tr)
    x = tr.pixels(tr.idx)
    assert imgs.dtype == torch.uint8 and len(imgs) == 8
    with torch.no_grad():
        assert torch.allclose(z[:4], m.ae.encode(x), atol=1e-5)
        assert torch.allclose(z[4:], m.ae.encode(x.flip(3)), atol=1e-5)


def test_unet_stage_latents_are_cached_and_remade_when_the_encoder_changes(tmp_path, monkeypatch):
    """The unet stage keeps its encoded training set next to its checkpoint: a second start reads it
    (no encoding), a changed encoder or a different image set makes it anew."""
    import train.train as tt

    tr = tiny_emoji_set(tmp_path, seed=2)
    m = tiny_model().eval()
    path = str(tmp_path / "latents.pt")
    calls, real = [], tt.encode_training_set
    monkeypatch.setattr(tt, "encode_training_set", lambda ae, train: calls.append(1) or real(ae, train))
    z1 = tt.cached_training_latents(m.ae, tr, path)
    z2 = tt.cached_training_latents(m.ae, tr, path)
    assert len(calls) == 1 and torch.equal(z1, z2)
    with torch.no_grad():
        m.ae.encoder.conv_in.weight.add_(0.01)
    z3 = tt.cached_training_latents(m.ae, tr, path)
    assert len(calls) == 2 and not torch.allclose(z1, z3)
    assert torch.allclose(z3, real(m.ae, tr)[1])
    tr.images[tr.idx[0], 0, 0, 0] ^= 255  # a different image set (every byte is sampled at this size)
    tt.cached_training_latents(m.ae, tr, path)
    assert len(calls) == 3


def test_a_v1_export_seeds_a_v1_1_run_that_computes_the_same_on_max_pooled_labels(tmp_path):
    """`seed_run(..., recipe="v1.1")`: every network carries over; seg_enc's weights for the new
    fill channel start at zero, so the seeded model translates exactly as the export does with
    max-pooled labels and region matching, and the fill channel gets gradients."""
    import json

    from train.export import export, load_exported
    from train.tests.test_train_steps import synthetic_batch, tiny_config
    from train.train import build, seed_run

    run, out, seeded = tmp_path / "a", tmp_path / "out", tmp_path / "seeded"
    run.mkdir()
    a = tiny_model()
    torch.save(a.state_dict(), run / "midm_e2e.pt")
    json.dump(tiny_config(), open(run / "config.json", "w"))
    export(str(run), str(out))
    cfg = seed_run(str(seeded), str(out), recipe="v1.1")
    assert cfg["midms"]["label_fill"] and cfg["midms"]["label_downsample"] == "max"
    _, m = build(str(seeded))
    load_prev(m, str(seeded), "e2e")
    m.eval()
    assert m.seg_enc.layer1[0].weight_orig.shape[1] == 2
    v1, _ = load_exported(str(out))
    v1.label_downsample = "max"
    # The recipe also matches by region, with open strokes and the outside kept, and transfers
    # colour by its own temperature: settings with no weights of their own.
    for key in ("region_matching", "region_open_strokes", "region_keep_outside", "colour_transfer"):
        assert cfg["midms"][key] and getattr(m, key), key
        setattr(v1, key, True)
    assert cfg["midms"]["colour_temperature"] == m.colour_temperature == 0.001  # model v1.7's
    v1.colour_temperature = m.colour_temperature
    assert cfg["midms"]["colour_layout_prior"] == m.colour_layout_prior == 3.0  # model v1.13's
    v1.colour_layout_prior = m.colour_layout_prior
    b = synthetic_batch(2, 32)
    args = (b["edge"], b["ref"], b["ref_edge"])
    want, _ = v1.translate(*args, generator=torch.Generator().manual_seed(0))
    got, _ = m.translate(*args, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()
    m.train()
    from train.ops import correlation, feature_normalize, seg_input

    seg_in, label = seg_input(b["edge"], (8, 8), "max", True)
    assert seg_in.shape[1] == 2 and seg_in[:, 1].sum() > 0
    f = feature_normalize(m.theta(m.layer(torch.cat([m.seg_enc(seg_in), label], 1))))
    correlation(f, f).sum().backward()
    assert m.seg_enc.layer1[0].weight_orig.grad[:, 1].abs().sum() > 0


def test_the_pipeline_fine_tunes_an_exported_autoencoder_for_colour_only_when_asked():
    """`train.pipeline --ae-anchor A` gives the ae stage the anchor and the colour terms; a new run's
    ae stage gets the colour terms with --ae-colour only, and trains on whole images."""
    from argparse import Namespace

    from train.pipeline import AE_COLOUR_FLAGS, stage_cmd

    base = dict(run="r", data="d", device="cpu", threads=1, amp="f32", recipe="v1", vgg=None, unet_stage_lr=3e-4)
    anchored = stage_cmd(Namespace(**base, ae_anchor=0.3, ae_colour=False), "ae", 1.0)
    i = anchored.index("--anchor")
    assert anchored[i + 1] == "0.3" and "--crop" in anchored and anchored[-len(AE_COLOUR_FLAGS):] == AE_COLOUR_FLAGS
    plain = stage_cmd(Namespace(**base, ae_anchor=0.0, ae_colour=False), "ae", 1.0)
    assert "--anchor" not in plain and "--w-ab" not in plain and plain[plain.index("--crop") + 1] == "0"
    coloured = stage_cmd(Namespace(**base, ae_anchor=0.0, ae_colour=True), "ae", 1.0)
    assert "--anchor" not in coloured and coloured[-len(AE_COLOUR_FLAGS):] == AE_COLOUR_FLAGS
    unet = stage_cmd(Namespace(**base, ae_anchor=0.3, ae_colour=True), "unet", 1.0)
    assert "--anchor" not in unet and "--w-ab" not in unet
    # the decoder stage keeps the colour terms whenever the autoencoder was tuned with them
    assert stage_cmd(Namespace(**base, ae_anchor=0.3, ae_colour=False), "decoder", 1.0)[-len(AE_COLOUR_FLAGS):] == AE_COLOUR_FLAGS
    assert "--w-ab" not in stage_cmd(Namespace(**base, ae_anchor=0.0, ae_colour=False), "decoder", 1.0)


def test_the_pipeline_passes_corr_ema_to_the_matching_stages_only():
    from argparse import Namespace

    from train.pipeline import stage_cmd

    base = dict(run="r", data="d", device="cpu", threads=1, amp="f32", vgg=None, unet_stage_lr=3e-4,
                ae_anchor=0.0, ae_colour=False, corr_ema=0.99)
    for recipe in ("v1", "v2"):
        for stage in ("warmup", "e2e"):
            cmd = stage_cmd(Namespace(**base, recipe=recipe), stage, 1.0)
            assert cmd[cmd.index("--corr-ema") + 1] == "0.99", (recipe, stage)
        assert "--corr-ema" not in stage_cmd(Namespace(**base, recipe=recipe), "unet", 1.0)
    off = dict(base, corr_ema=0.0)
    assert "--corr-ema" not in stage_cmd(Namespace(**off, recipe="v1"), "e2e", 1.0)
