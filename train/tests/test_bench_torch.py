"""`train.bench_torch` on the shipped model: the stages `midm bench --compare-torch` times."""
import os

import torch

from train.bench_torch import load, stages
from train.ops import seg_input

WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "weights")


def test_every_stage_runs_on_the_shipped_model_with_its_fill_channel():
    model, cfg = load(WEIGHTS)
    assert model.label_fill, "the shipped model's seg_enc takes line + fill"
    size = cfg["model"]["params"]["first_stage_config"]["params"]["ddconfig"]["resolution"]
    device = torch.device("cpu")
    with torch.inference_mode():
        timed = {key: fn for key, _, fn in stages(model, size, device)}
        assert {"condition_side", "exemplar_side", "unet", "decode", "translation"} <= set(timed)
        for key, fn in timed.items():
            if key != "translation":  # the whole translation is the sampler's, tested elsewhere
                fn()
        # The condition side is seg_enc on the line and fill channels, as the sampler runs it.
        g = torch.Generator().manual_seed(0)
        cond = torch.rand(1, model.label_nc, size, size, generator=g)
        hw = model.ae.encode(torch.zeros(1, 3, size, size)).shape[2:]
        seg_in, _ = seg_input(cond, hw, model.label_downsample, model.label_fill)
        assert seg_in.shape[1] == 2 and model.seg_enc(seg_in).shape[2:] == hw
