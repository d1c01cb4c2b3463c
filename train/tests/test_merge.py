import torch

from train.merge import merge


def test_untrained_tensors_keep_the_base_values_and_trained_ones_come_from_the_export():
    g = torch.Generator().manual_seed(0)
    base = {"ae.w": torch.randn(4, 4, generator=g), "unet.w": torch.randn(3, generator=g),
            "steps": torch.arange(3)}
    export = {k: v.half() if v.is_floating_point() else v for k, v in base.items()}
    export["unet.w"] = (base["unet.w"] + 0.5).half()
    out, taken = merge(base, export)
    assert taken == ["unet.w"]
    assert torch.equal(out["ae.w"], base["ae.w"])  # not its float16 rounding
    assert not torch.equal(base["ae.w"].half().float(), base["ae.w"])
    assert out["unet.w"].dtype == torch.float32
    assert torch.equal(out["unet.w"], export["unet.w"].float())
    assert torch.equal(out["steps"], base["steps"])
