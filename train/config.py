"""Default model configuration (LDM model-zoo layout, as weights/config.yaml) and the MIDM extras."""
import copy

DEFAULT = {
    "model": {
        "base_learning_rate": 2.0e-06,
        "target": "models.diffusion.ddpm.LatentDiffusion",
        "params": {
            "linear_start": 0.0015,
            "linear_end": 0.0195,
            "num_timesteps_cond": 1,
            "log_every_t": 200,
            "timesteps": 1000,
            "first_stage_key": "image",
            "image_size": 16,  # latent side
            "channels": 3,
            "monitor": "val/loss_simple_ema",
            "unet_config": {
                "target": "models.diffusionmodules.openaimodel.UNetModel",
                "params": {
                    "image_size": 16,
                    "in_channels": 3,
                    "out_channels": 3,
                    "model_channels": 32,
                    "attention_resolutions": [2, 4],
                    "num_res_blocks": 1,
                    "channel_mult": [1, 2, 3],
                    "num_head_channels": 32,
                },
            },
            "first_stage_config": {
                "target": "models.feature_backbones.autoencoder.VQModelInterface",
                "params": {
                    "embed_dim": 3,
                    "n_embed": 512,
                    "ddconfig": {
                        "double_z": False,
                        "z_channels": 3,
                        "resolution": 64,
                        "in_channels": 3,
                        "out_ch": 3,
                        "ch": 32,
                        "ch_mult": [1, 2, 2],
                        "num_res_blocks": 1,
                        "attn_resolutions": [],
                        "dropout": 0.0,
                    },
                    "lossconfig": {"target": "torch.nn.Identity"},
                },
            },
            "cond_stage_config": "__is_unconditional__",
        },
    },
    # Read by nothing in LDM; the Rust loader takes the correspondence widths from weight shapes.
    "midms": {"label_nc": 1, "N_CH": 32, "corr_ndf": 8, "spade_nhidden": 16, "image_size": 64,
              "condition": "canny edges, 1 channel, 1 = edge"},
}


# State-dict prefixes of the correspondence networks (F_X, F_Y, F_Y^iter and the matching trunk).
CORR_NETS = ("seg_enc", "real_enc", "iter_enc", "layer", "phi", "theta")  # the matching networks
CORR_PREFIXES = tuple(f"{n}." for n in CORR_NETS)
UNET_PREFIX = "diff_model.model.diffusion_model."
AE_PREFIX = "diff_model.first_stage_model."


def default_config(size=64):
    """The default model for `size` x `size` images (f = 4: latent size / 4)."""
    cfg = copy.deepcopy(DEFAULT)
    p = cfg["model"]["params"]
    p["image_size"] = p["unet_config"]["params"]["image_size"] = size // 4
    p["first_stage_config"]["params"]["ddconfig"]["resolution"] = size
    cfg["midms"]["image_size"] = size
    return cfg


# Model v2 (the recipe of train.pairs): what a new run folder takes with `--recipe v2`. Wider
# correspondence networks (the authors' are 256 / 64 wide at 64x64 latents; ours were 32 / 8),
# conditions brought to the latent grid by max-pooling (ops.downsample_label), so thin strokes survive,
# and seg_enc seeing the filled drawing (ops.seg_input), which model v1.1 showed to help (validation
# score 0.889 against 0.784 for model v1 on max-pooled labels).
# Both recipes also match by region (ops.restrict_to_regions; model v1.3: hand-drawn silhouette IoU
# 0.680 -> 0.79), with open strokes counted as inside and the re-warp kept outside the drawn shape
# (ops.target_cells, ops.keep_outside; model v1.5). It applies where the model translates
# (inference, validation) and in the matching networks' training (train_corr.training_regions).
# And both translate with colour transfer (train.colour; model v1.6), an inference step only, by a
# sharper softmax than the matching's (midms.colour_temperature; model v1.7), its matches inside the
# drawn shape weighed by where they lie in it (midms.colour_layout_prior, ops.layout_penalty; model v1.13).
RECIPE_V2 = {"N_CH": 64, "corr_ndf": 16, "spade_nhidden": 32, "label_downsample": "max", "label_fill": True,
             "region_matching": True, "region_open_strokes": True, "region_keep_outside": True,
             "colour_transfer": True, "colour_temperature": 0.001, "colour_layout_prior": 3.0,
             "condition": "user-like strokes: 1-px sketch lines drawn 1-4 px wide (at 128), 1 = line"}
V2_WIDTHS = ("N_CH", "corr_ndf", "spade_nhidden")


# Model v1.1: model v1's networks with the v2 conditions (max-pooled strokes, train.pairs) and
# seg_enc seeing the filled drawing (ops.seg_input); trained on from a v1 export, on the CPU.
RECIPE_V1_1 = {"label_downsample": "max", "label_fill": True, "region_matching": True, "region_open_strokes": True,
               "region_keep_outside": True, "colour_transfer": True,
               "colour_temperature": 0.001, "colour_layout_prior": 3.0, "condition": RECIPE_V2["condition"]}
RECIPES = ("v1", "v1.1", "v2")


def recipe_of(cfg):
    """The recipe a config was made by. v2 is told by its correspondence widths: model v1.1 shares
    its max-pooled, filled conditions but keeps model v1's narrow networks."""
    m = cfg["midms"]
    if all(m.get(k) == RECIPE_V2[k] for k in V2_WIDTHS):
        return "v2"
    return "v1.1" if m.get("label_fill") else "v1"


def apply_recipe(cfg, recipe):
    if recipe == "v2":
        cfg["midms"].update(RECIPE_V2)
    elif recipe == "v1.1":
        cfg["midms"].update(RECIPE_V1_1)
    elif recipe != "v1":
        raise SystemExit(f"unknown recipe {recipe!r} {RECIPES}")
    return cfg


def corr_kwargs(cfg):
    m = cfg["midms"]
    return dict(label_nc=m["label_nc"], n_ch=m["N_CH"], ndf=m["corr_ndf"], spade_nhidden=m["spade_nhidden"],
                label_fill=bool(m.get("label_fill", False)))
