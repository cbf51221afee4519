"""Train the embedded demo model, its LoRA and its textual-inversion embedding (one H100, well under 20 minutes).

    python tools/train_demo.py --out-dir assets/demo

Deterministic seeds. Stages: VAE (then its latents are rescaled to SD1's 0.18215 convention), UNet + CLIP text
encoder together (10% caption dropout, for classifier-free guidance), then with the model frozen: a kohya-format
LoRA that draws shapes with diagonal white stripes, and an A1111 textual-inversion embedding `shapey` = an orange
triangle. Outputs (original single-file SD1 layout, loadable by modules.models.loader):
    demo-shapes-sd1.safetensors, lora-striped.safetensors, shapey.safetensors, train_log.json
The architecture is SD1.x's, scaled down; sizes are chosen so the fp16 file stays under 30 MB.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from diffusers import AutoencoderKL, UNet2DConditionModel  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

from modules.models.architecture import family_config  # noqa: E402
from modules.models.ldm_layout import save_single_file, to_single_file  # noqa: E402
from tools import shapes  # noqa: E402

IMAGE_SIZE = 64
SCALING_FACTOR = 0.18215  # SD1's latent scale, which the shipped sd1 config (and so the loader) uses
PLACEHOLDER = "sks"        # a single, otherwise meaningless CLIP token that stands in for the embedding in training
TI_NAME = "shapey"
TI_SPEC = {"shape": "triangle", "colour": "orange"}

UNET_CONFIG = {**family_config("sd1", "unet"), "block_out_channels": [64, 128, 128], "layers_per_block": 1,
               "down_block_types": ["CrossAttnDownBlock2D"] * 3, "up_block_types": ["CrossAttnUpBlock2D"] * 3,
               "cross_attention_dim": 96, "attention_head_dim": 8, "sample_size": IMAGE_SIZE // 8}
VAE_CONFIG = {**family_config("sd1", "vae"), "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2,
              "sample_size": IMAGE_SIZE}
TEXT_CONFIG = {**family_config("sd1", "text_encoder"), "hidden_size": 96, "intermediate_size": 384,
               "num_hidden_layers": 3, "num_attention_heads": 1, "projection_dim": 96}


def log(message: str, start: float) -> None:
    print(f"[{time.time() - start:7.1f}s] {message}", flush=True)


def cosine_lr(step: int, total: int, base: float, warmup: int) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return base * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


class Data:
    """Random shape pictures and captions, drawn on the device."""

    def __init__(self, seed: int, device: torch.device) -> None:
        self.rng = random.Random(seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = device

    def batch(self, n: int, striped_fraction: float = 0.0, **fixed: str) -> tuple[list[shapes.Spec], torch.Tensor]:
        specs = [shapes.random_spec(self.rng, **fixed) for _ in range(n)]
        specs = [shapes.with_striped(s) if self.rng.random() < striped_fraction else s for s in specs]
        return specs, shapes.render(specs, IMAGE_SIZE, self.device, self.generator)


def _edge_loss(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """L1 between image gradients: pixel losses alone let the VAE round off the corners of small shapes (a small
    square came back as a circle), which caps the model's shape accuracy."""
    def gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]
    (rx, ry), (ix, iy) = gradients(recon), gradients(images)
    return F.l1_loss(rx, ix) + F.l1_loss(ry, iy)


def train_vae(data: Data, steps: int, batch: int, device: torch.device, start: float,
              seconds: float = 0.0) -> AutoencoderKL:
    """steps=0: train for about `seconds` (the step count reached is recorded in the file's metadata)."""
    vae = AutoencoderKL.from_config(VAE_CONFIG).to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=1e-3, weight_decay=0.0, fused=device.type == "cuda")
    warmup, step, stage_start = 200, 0, time.time()
    while step < (steps or warmup + 1):
        if not steps and step == warmup:
            steps = max(warmup + 1, int(seconds / ((time.time() - stage_start) / warmup)) // 50 * 50)
            log(f"vae: {steps} steps fit in {seconds:.0f}s", start)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps or 10**9, 1e-3, warmup)
        _, images = data.batch(batch, striped_fraction=0.2)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            posterior = vae.encode(images).latent_dist
            recon = vae.decode(posterior.sample()).sample.float()
        loss = F.mse_loss(recon, images) + 0.1 * F.l1_loss(recon, images) + 0.5 * _edge_loss(recon, images) \
            + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 1000 == 0 or step == steps - 1:
            log(f"vae {step}/{steps} loss {loss.item():.5f}", start)
        step += 1
    vae.trained_steps = steps
    vae.eval()
    _rescale_latents(vae, data, device)
    return vae


@torch.no_grad()
def vae_round_trip_accuracy(vae: AutoencoderKL, device: torch.device, n: int = 600) -> dict[str, float]:
    """What the analyser reads back after encode + decode: the ceiling the VAE puts on the whole model."""
    rng = random.Random(12345)
    specs = [shapes.random_spec(rng) for _ in range(n)]
    images = shapes.render(specs, IMAGE_SIZE, device, torch.Generator().manual_seed(12345))
    readings = [shapes.analyse(im) for im in shapes.to_uint8(vae.decode(vae.encode(images).latent_dist.mean).sample)]
    return {a: sum(getattr(r, a) == getattr(s, a) for r, s in zip(readings, specs, strict=True)) / n
            for a in ("colour", "shape", "position", "background", "size")}


@torch.no_grad()
def _rescale_latents(vae: AutoencoderKL, data: Data, device: torch.device) -> None:
    """Make latents * 0.18215 have unit std, as SD1's do, by folding a scale into quant/post-quant convs."""
    _, images = data.batch(512)
    std = vae.encode(images).latent_dist.mean.std().item()
    k = (1.0 / SCALING_FACTOR) / std
    latent = vae.config.latent_channels
    vae.quant_conv.weight[:latent] *= k
    vae.quant_conv.bias[:latent] *= k
    vae.quant_conv.bias[latent:] += 2 * math.log(k)  # logvar of the scaled distribution
    vae.post_quant_conv.weight /= k
    check = vae.encode(images).latent_dist.mean.std().item() * SCALING_FACTOR
    print(f"latent scale folded in: k={k:.3f}, scaled latent std now {check:.3f}", flush=True)


_TOKEN_CACHE: dict[str, torch.Tensor] = {}


def token_ids(tokenizer: CLIPTokenizer, captions: list[str], device: torch.device) -> torch.Tensor:
    """Same ids as inference: BOS + tokens + EOS, padded with EOS to 77 (modules/prompts/encoder.py). Cached: the
    caption space is small and tokenising every batch would dominate a step of this tiny model."""
    missing = [c for c in dict.fromkeys(captions) if c not in _TOKEN_CACHE]
    if missing:
        ids = tokenizer(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
        _TOKEN_CACHE.update(zip(missing, ids))
    return torch.stack([_TOKEN_CACHE[c] for c in captions]).to(device, non_blocking=True)


def encode_text(tokenizer: CLIPTokenizer, encoder: CLIPTextModel, captions: list[str],
                device: torch.device) -> torch.Tensor:
    return encoder(token_ids(tokenizer, captions, device)).last_hidden_state


def noisy_latents(latents: torch.Tensor, alphas_cumprod: torch.Tensor, generator: torch.Generator
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n = latents.shape[0]
    t = torch.randint(0, len(alphas_cumprod), (n,), generator=generator).to(latents.device)
    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    a = alphas_cumprod[t].view(n, 1, 1, 1)
    return a.sqrt() * latents + (1 - a).sqrt() * noise, noise, t


def sd1_alphas_cumprod(device: torch.device) -> torch.Tensor:
    sched = family_config("sd1", "scheduler")
    betas = torch.linspace(sched["beta_start"] ** 0.5, sched["beta_end"] ** 0.5, sched["num_train_timesteps"]) ** 2
    return torch.cumprod(1 - betas, 0).to(device)


def train_unet(data: Data, vae: AutoencoderKL, tokenizer: CLIPTokenizer, steps: int, batch: int,
               device: torch.device, seed: int, start: float, lr: float = 1e-3, ema_decay: float = 0.999,
               seconds: float = 0.0, resume: tuple[UNet2DConditionModel, CLIPTextModel] | None = None
               ) -> tuple[UNet2DConditionModel, CLIPTextModel]:
    """steps=0: train for about `seconds` (the step count reached is recorded in the file's metadata).
    `resume`: continue from these models instead of a fresh initialisation."""
    torch.manual_seed(seed)
    if resume:
        unet, text = (m.to(device).float().train().requires_grad_(True) for m in resume)
    else:
        unet = UNet2DConditionModel.from_config(UNET_CONFIG).to(device).train()
        text = CLIPTextModel(CLIPTextConfig(**TEXT_CONFIG)).to(device).train()
    params = [*unet.parameters(), *text.parameters()]
    ema = [p.detach().clone() for p in params]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, fused=device.type == "cuda")
    alphas = sd1_alphas_cumprod(device)
    generator = torch.Generator().manual_seed(seed + 1)
    warmup = 200
    step, stage_start = 0, time.time()
    while step < (steps or warmup + 1):
        if not steps and step == warmup:  # time-budget mode: fix the step count from the measured speed
            steps = max(warmup + 1, int(seconds / ((time.time() - stage_start) / warmup)) // 50 * 50)
            log(f"unet: {steps} steps fit in {seconds:.0f}s", start)
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps or 10**9, lr, warmup)
        specs, images = data.batch(batch)
        captions = ["" if data.rng.random() < 0.1 else shapes.training_caption(s, data.rng) for s in specs]
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample() * SCALING_FACTOR
        noisy, noise, t = noisy_latents(latents, alphas, generator)
        context = encode_text(tokenizer, text, captions, device)
        prediction = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(prediction.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - decay)
        if step % 1000 == 0 or step == steps - 1:
            log(f"unet {step}/{steps} loss {loss.item():.4f}", start)
        step += 1
    with torch.no_grad():
        for p, averaged in zip(params, ema):
            p.copy_(averaged)
    unet.trained_steps = steps
    return unet.eval(), text.eval()


class LoRALinear(torch.nn.Module):
    """y = W x + up(down(x)) * alpha / rank: kohya's LoRA on one Linear layer (training only)."""

    def __init__(self, base: torch.nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.down = torch.nn.Linear(base.in_features, rank, bias=False)
        self.up = torch.nn.Linear(rank, base.out_features, bias=False)
        torch.nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        torch.nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.up(self.down(x))


def train_lora(data: Data, vae, unet, text, tokenizer, steps: int, batch: int, device: torch.device, rank: int,
               start: float) -> dict[str, torch.Tensor]:
    """Kohya-format LoRA on the UNet's attention projections that adds diagonal white stripes to shapes."""
    wrapped: dict[str, LoRALinear] = {}
    for name, _module in list(unet.named_modules()):
        for child in ("to_q", "to_k", "to_v", "to_out.0"):
            parent_name, _, attr = f"{name}.{child}".rpartition(".")
            if not name.endswith(("attn1", "attn2")):
                continue
            parent = unet.get_submodule(parent_name)
            layer = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
            lora = LoRALinear(layer, rank).to(device)
            if attr.isdigit():
                parent[int(attr)] = lora
            else:
                setattr(parent, attr, lora)
            wrapped[f"{name}.{child}"] = lora
    params = [p for lora in wrapped.values() for p in (*lora.down.parameters(), *lora.up.parameters())]
    opt = torch.optim.AdamW(params, lr=1e-3)
    alphas = sd1_alphas_cumprod(device)
    generator = torch.Generator().manual_seed(7)
    for step in range(steps):
        specs, images = data.batch(batch, striped_fraction=1.0)
        captions = [shapes.training_caption(s, data.rng) for s in specs]
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample() * SCALING_FACTOR
            context = encode_text(tokenizer, text, captions, device)
        noisy, noise, t = noisy_latents(latents, alphas, generator)
        prediction = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(prediction.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"lora {step}/{steps} loss {loss.item():.4f}", start)
    state: dict[str, torch.Tensor] = {}
    for path, lora in wrapped.items():
        key = "lora_unet_" + path.replace(".", "_")
        state[f"{key}.lora_down.weight"] = lora.down.weight.detach().float().cpu().contiguous()
        state[f"{key}.lora_up.weight"] = lora.up.weight.detach().float().cpu().contiguous()
        state[f"{key}.alpha"] = torch.tensor(float(rank))
        # unwrap so the UNet is unchanged for what follows
        parent_name, _, attr = path.rpartition(".")
        parent = unet.get_submodule(parent_name)
        if attr.isdigit():
            parent[int(attr)] = lora.base
        else:
            setattr(parent, attr, lora.base)
    return state


def train_embedding(data: Data, vae, unet, text, tokenizer, steps: int, batch: int, device: torch.device,
                    start: float) -> torch.Tensor:
    """One textual-inversion vector for `shapey` (an orange triangle), learned through the placeholder token's
    row of the frozen text encoder's embedding table (restored afterwards)."""
    token_id = tokenizer.convert_tokens_to_ids(PLACEHOLDER + "</w>")
    table = text.get_input_embeddings().weight
    original_row = table[token_id].detach().clone()
    init_id = tokenizer.convert_tokens_to_ids("triangle</w>")
    vector = table[init_id].detach().clone().requires_grad_(True)
    for p in [*unet.parameters(), *text.parameters()]:
        p.requires_grad_(False)
    opt = torch.optim.AdamW([vector], lr=5e-3, weight_decay=0.0)
    alphas = sd1_alphas_cumprod(device)
    generator = torch.Generator().manual_seed(11)
    for step in range(steps):
        specs, images = data.batch(batch, **TI_SPEC)
        captions = [shapes.caption(s, frozenset(k for k in ("size", "position", "background")
                                                if data.rng.random() < 0.15), shape_word=PLACEHOLDER)
                    for s in specs]
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample() * SCALING_FACTOR
        noisy, noise, t = noisy_latents(latents, alphas, generator)
        ids = token_ids(tokenizer, captions, device)
        embeds = text.get_input_embeddings()(ids)
        embeds = torch.where((ids == token_id)[..., None], vector.to(embeds.dtype), embeds)
        context = _encode_from_embeddings(text, embeds)
        prediction = unet(noisy, t, encoder_hidden_states=context).sample
        loss = F.mse_loss(prediction.float(), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"embedding {step}/{steps} loss {loss.item():.4f}", start)
    with torch.no_grad():
        table[token_id] = original_row
    return vector.detach().float().cpu()[None]


def _encode_from_embeddings(text: CLIPTextModel, token_embeds: torch.Tensor) -> torch.Tensor:
    """CLIP text forward from token embeddings (so one row can be a trainable vector); mirrors
    CLIPTextModel.forward in transformers 5."""
    from transformers.masking_utils import create_causal_mask

    model = text.text_model if hasattr(text, "text_model") else text
    hidden = model.embeddings(inputs_embeds=token_embeds)
    mask = create_causal_mask(config=model.config, inputs_embeds=hidden, attention_mask=None, past_key_values=None)
    hidden = model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
    return model.final_layer_norm(hidden)


def git_commit() -> str:
    if os.environ.get("DEMO_COMMIT"):  # the GPU machine gets a copy of the tree without .git
        return os.environ["DEMO_COMMIT"]
    result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return result.stdout.strip() if result.returncode == 0 else "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out-dir", default=str(ROOT / "assets" / "demo"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=256, help="VAE, LoRA and embedding batch")
    parser.add_argument("--unet-batch", type=int, default=1024)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--vae-steps", type=int, default=0, help="0: as many as --vae-seconds allows")
    parser.add_argument("--vae-seconds", type=float, default=150.0)
    parser.add_argument("--unet-steps", type=int, default=0, help="0: as many as --unet-seconds allows")
    parser.add_argument("--unet-seconds", type=float, default=330.0)
    parser.add_argument("--lora-steps", type=int, default=400)
    parser.add_argument("--ti-steps", type=int, default=400)
    parser.add_argument("--lora-rank", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--resume", default="", help="continue training this demo checkpoint (second phase)")
    args = parser.parse_args()

    start = time.time()
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = CLIPTokenizer.from_pretrained(str(ROOT / "configs" / "tokenizer"), local_files_only=True)
    data = Data(args.seed, device)

    resume, history = None, {}
    if args.resume:  # a second phase: keep the VAE, continue UNet + text encoder, retrain LoRA and embedding
        from modules.devices import choose_policy
        from modules.models.loader import load_model
        from modules.models.registry import CheckpointInfo

        path = Path(args.resume)
        previous = load_model(CheckpointInfo(str(path), path.name), choose_policy(use_cpu=["all"]))
        history = {"resumed_from": path.name, "previous_steps": previous.metadata.get("steps", "")}
        vae = previous.vae.to(device).float().eval()
        resume = (previous.unet, previous.text_encoders[0])
        args.vae_steps = 0
    else:
        vae = train_vae(data, args.vae_steps, args.batch, device, start, seconds=args.vae_seconds)
        args.vae_steps = vae.trained_steps
    vae_accuracy = vae_round_trip_accuracy(vae, device)
    log(f"VAE round trip read back by the analyser: {vae_accuracy}", start)
    vae.requires_grad_(False)
    unet, text = train_unet(data, vae, tokenizer, args.unet_steps, args.unet_batch, device, args.seed, start,
                            lr=args.lr, seconds=args.unet_seconds, resume=resume)
    args.unet_steps = unet.trained_steps
    lora = train_lora(data, vae, unet, text, tokenizer, args.lora_steps, args.batch, device, args.lora_rank, start)
    embedding = train_embedding(data, vae, unet, text, tokenizer, args.ti_steps, args.batch, device, start)

    record = {
        "script": "tools/train_demo.py", "commit": git_commit(), "seed": str(args.seed),
        "steps": json.dumps({"vae": args.vae_steps, "unet_text_encoder": args.unet_steps,
                             "lora": args.lora_steps, "embedding": args.ti_steps}),
        "batch": json.dumps({"unet_text_encoder": args.unet_batch, "others": args.batch}), "lr": str(args.lr),
        "image_size": str(IMAGE_SIZE), "device": torch.cuda.get_device_name()
        if device.type == "cuda" else "cpu", "torch": torch.__version__,
        "train_seconds": f"{time.time() - start:.0f}", "vae_round_trip_accuracy": json.dumps(vae_accuracy),
        **history,
        "modelspec.title": "Demo model: shapes (tiny SD1.x)",
        "modelspec.architecture": "stable-diffusion-v1",
        "modelspec.resolution": f"{IMAGE_SIZE}x{IMAGE_SIZE}",  # the UI's default size for this model
        "description": "Draws circles, squares and triangles in 8 colours on coloured backgrounds, 64x64. "
                       "Prompt like: a large red circle on the left, blue background",
    }
    components = {"unet": unet.float().cpu(), "vae": vae.float().cpu(), "text_encoder": text.float().cpu()}
    model_path = out / "demo-shapes-sd1.safetensors"
    save_single_file(to_single_file(components, "sd1"), model_path, metadata=record, dtype=torch.float16)
    save_file(lora, str(out / "lora-striped.safetensors"), metadata={
        "ss_network_module": "networks.lora", "ss_network_dim": str(args.lora_rank),
        "ss_network_alpha": str(args.lora_rank), "ss_output_name": "lora-striped",
        "description": "Diagonal white stripes on the shapes", "script": "tools/train_demo.py",
        "commit": record["commit"]})
    save_file({"emb_params": embedding.contiguous()}, str(out / f"{TI_NAME}.safetensors"),
              metadata={"name": TI_NAME, "description": "an orange triangle", "script": "tools/train_demo.py",
                        "commit": record["commit"]})
    (out / "train_log.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"written {model_path} ({model_path.stat().st_size / 1e6:.1f} MB)", start)


if __name__ == "__main__":
    main()
