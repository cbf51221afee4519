"""Write the diffusers-format config folders (no weights) for every model family under configs/.

Run once by a developer; the app only reads the JSON files. Values are those of the public reference models
(SD 1.5, SD 2.x base / 768-v, SDXL base / refiner and their inpainting variants). Dimensions that differ between
checkpoints of one family are re-derived from the weights at load time (modules/models/architecture.py); these
files give what the weights cannot tell (head counts, activations, norms, scheduler).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"

SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
SDXL_SCHEDULER = {**SCHEDULER, "_class_name": "EulerDiscreteScheduler", "interpolation_type": "linear",
                  "use_karras_sigmas": False}

VAE = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}
SDXL_VAE = {**VAE, "sample_size": 1024, "scaling_factor": 0.13025, "force_upcast": True}

CLIP_L = {
    "architectures": ["CLIPTextModel"],
    "model_type": "clip_text_model",
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 2,
    "pad_token_id": 1,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
    "vocab_size": 49408,
}
# SD2 drops OpenCLIP-H's last block (it conditions on the penultimate layer), hence 23 layers.
OPEN_CLIP_H = {**CLIP_L, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
               "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}
OPEN_CLIP_BIGG = {**CLIP_L, "architectures": ["CLIPTextModelWithProjection"], "hidden_act": "gelu",
                  "hidden_size": 1280, "intermediate_size": 5120, "num_attention_heads": 20,
                  "num_hidden_layers": 32, "projection_dim": 1280}

UNET_SD1 = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "out_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "sample_size": 64,
}
UNET_SD2 = {**UNET_SD1, "attention_head_dim": [5, 10, 20, 20], "cross_attention_dim": 1024,
            "use_linear_projection": True}
UNET_SDXL = {
    **UNET_SD1,
    "addition_embed_type": "text_time",
    "addition_time_embed_dim": 256,
    "attention_head_dim": [5, 10, 20],
    "block_out_channels": [320, 640, 1280],
    "cross_attention_dim": 2048,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
    "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "projection_class_embeddings_input_dim": 2816,
    "sample_size": 128,
    "transformer_layers_per_block": [1, 2, 10],
    "use_linear_projection": True,
}
UNET_SDXL_REFINER = {
    **UNET_SDXL,
    "attention_head_dim": [6, 12, 24, 24],
    "block_out_channels": [384, 768, 1536, 1536],
    "cross_attention_dim": 1280,
    "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    "projection_class_embeddings_input_dim": 2560,
    "transformer_layers_per_block": 4,
}


def family(name: str, pipeline: str, unet: dict, vae: dict, scheduler: dict, text_encoders: list[tuple[str, dict]],
           **extra_unet: object) -> None:
    folder = CONFIGS / name
    if folder.exists():
        shutil.rmtree(folder)
    components = {"unet": {**unet, **extra_unet}, "vae": vae, "scheduler": scheduler}
    index: dict[str, object] = {"_class_name": pipeline, "_diffusers_version": "0.42.1",
                                "unet": ["diffusers", "UNet2DConditionModel"],
                                "vae": ["diffusers", "AutoencoderKL"],
                                "scheduler": ["diffusers", scheduler["_class_name"]]}
    for slot, config in text_encoders:
        components[slot] = config
        index[slot] = ["transformers", config["architectures"][0]]
        index[slot.replace("text_encoder", "tokenizer")] = ["transformers", "CLIPTokenizer"]
    for component, config in components.items():
        (folder / component).mkdir(parents=True)
        file = "scheduler_config.json" if component == "scheduler" else "config.json"
        (folder / component / file).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    (folder / "model_index.json").write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


def main() -> None:
    sd2_v_scheduler = {**SCHEDULER, "prediction_type": "v_prediction"}
    family("sd1", "StableDiffusionPipeline", UNET_SD1, VAE, SCHEDULER, [("text_encoder", CLIP_L)])
    family("sd1-inpaint", "StableDiffusionInpaintPipeline", UNET_SD1, VAE, SCHEDULER,
           [("text_encoder", CLIP_L)], in_channels=9)
    family("sd2", "StableDiffusionPipeline", UNET_SD2, VAE, SCHEDULER, [("text_encoder", OPEN_CLIP_H)])
    family("sd2-v", "StableDiffusionPipeline", UNET_SD2, {**VAE, "sample_size": 768}, sd2_v_scheduler,
           [("text_encoder", OPEN_CLIP_H)], sample_size=96, upcast_attention=True)
    family("sd2-inpaint", "StableDiffusionInpaintPipeline", UNET_SD2, VAE, SCHEDULER,
           [("text_encoder", OPEN_CLIP_H)], in_channels=9)
    family("sdxl", "StableDiffusionXLPipeline", UNET_SDXL, SDXL_VAE, SDXL_SCHEDULER,
           [("text_encoder", CLIP_L), ("text_encoder_2", OPEN_CLIP_BIGG)])
    family("sdxl-refiner", "StableDiffusionXLImg2ImgPipeline", UNET_SDXL_REFINER, SDXL_VAE, SDXL_SCHEDULER,
           [("text_encoder_2", OPEN_CLIP_BIGG)])
    family("sdxl-inpaint", "StableDiffusionXLInpaintPipeline", UNET_SDXL, SDXL_VAE, SDXL_SCHEDULER,
           [("text_encoder", CLIP_L), ("text_encoder_2", OPEN_CLIP_BIGG)], in_channels=9)


if __name__ == "__main__":
    main()
