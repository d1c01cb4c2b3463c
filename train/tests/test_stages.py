"""Stage bookkeeping: resuming keeps the command line's learning rates; the unet stage takes only the
autoencoder from the previous stage, so a run may choose another UNet width."""
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

