"""SWD and its resamples (`train.evaluate.swd`, `bootstrap_swd`, `bootstrap_summary`)."""
import torch

from train.evaluate import bootstrap_summary, bootstrap_swd, swd


def images(n, seed, blur=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g) * 2 - 1
    return torch.nn.functional.avg_pool2d(x, 3, 1, 1) if blur else x


def test_swd_tells_alike_sets_from_unlike_ones():
    # Patches are drawn at random places on each side, so even alike sets score above 0.
    target = images(16, 0)
    assert swd(images(16, 1), target)[0] < swd(images(16, 1, blur=True), target)[0]


def test_resamples_rank_a_row_that_is_closer_on_every_pair_first_every_time():
    target = images(16, 0)
    outs = {"full": images(16, 1), "no_mask": images(16, 2, blur=True)}
    boot = bootstrap_swd(outs, target, 6)
    assert set(boot) == {"full", "no_mask"} and all(len(v) == 6 for v in boot.values())
    # Resampled pairs differ: the values spread (otherwise the interval would say nothing).
    assert len(set(boot["full"])) > 1
    rows = {name: {"swd": 0.0, "swd_bootstrap": v} for name, v in boot.items()}
    summary = bootstrap_summary(rows)
    lo, hi, below = summary["no_mask"]
    assert lo <= hi and below == 1.0 and summary["full"][2] is None
    # Swapped, the full row never scores below.
    rows["full"], rows["no_mask"] = rows["no_mask"], rows["full"]
    assert bootstrap_summary(rows)["no_mask"][2] == 0.0


def test_rows_are_translated_chunk_by_chunk_with_each_chunks_own_seed():
    """`run_variant`: every chunk of pairs gets the generator seeded with seed + its first index (so
    a row's outputs do not depend on the device that ran it) and comes back to the host."""
    from train.config import default_config
    from train.evaluate import run_variant
    from train.midm import MIDM

    cfg = default_config()
    size = cfg["midms"]["image_size"]
    torch.manual_seed(0)
    model = MIDM(cfg).eval()
    g = torch.Generator().manual_seed(3)
    edge = (torch.rand(3, 1, size, size, generator=g) > 0.9).float()
    ref = torch.rand(3, 3, size, size, generator=g) * 2 - 1
    batch = {"edge": edge, "ref": ref, "ref_edge": edge.flip(-1), "image": ref}
    out = run_variant(model, batch, "full", seed=5, chunk=2)
    assert out.shape == (3, 3, size, size) and out.device.type == "cpu" and out.abs().max() <= 1
    for s in (0, 2):
        want = model.translate(edge[s:s + 2], ref[s:s + 2], edge.flip(-1)[s:s + 2],
                               generator=torch.Generator().manual_seed(5 + s))[0].clamp(-1, 1)
        assert torch.equal(out[s:s + 2], want)
    assert not torch.equal(out, run_variant(model, batch, "no_mask", seed=5, chunk=2))
