"""SD-family weights from a local folder, end to end on tiny random components built from configs.

No weights are downloaded: the UNet, VAE, CLIP text encoder and a character-level CLIP
tokenizer (vocab + empty merges written here) are built from small configs and saved to
tmp_path, as diffusers' own fast tests do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.errors import InputError
from core.training.label_config import ControlNetConfig, LabelDataConfig

PROMPT = "an h&e tissue section"


def save_tiny_sd(folder: Path) -> Path:
    """A tiny SD 1.5-style folder: unet/ vae/ text_encoder/ tokenizer/ scheduler/ (+ model_index.json)."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=16,
    ).save_pretrained(folder / "unet")  # fmt: skip
    AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(16, 32), latent_channels=4, norm_num_groups=16, sample_size=16,
    ).save_pretrained(folder / "vae")  # fmt: skip
    CLIPTextModel(
        CLIPTextConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=16,
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    ).save_pretrained(folder / "text_encoder")
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz&":
        vocab[c], vocab[c + "</w>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    CLIPTokenizer(
        str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=16, pad_token="<|endoftext|>"
    ).save_pretrained(folder / "tokenizer")
    PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
    ).save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    return folder


def write_rgb_pairs(folder: Path, n: int = 6) -> Path:
    """Pink/purple 24 x 24 'tiles' with a two-class layout (stroma, nuclei)."""
    rng = np.random.default_rng(0)
    (folder / "images").mkdir(parents=True)
    (folder / "labels").mkdir()
    (folder / "classes.json").write_text(json.dumps({"classes": ["stroma", "nuclei"], "licence": "CC0"}))
    for i in range(n):
        lab = np.ones((24, 24), np.uint8)
        r, c = rng.integers(2, 14, size=2)
        lab[r : r + 8, c : c + 8] = 2
        rgb = np.where(lab[..., None] == 2, (80, 40, 140), (230, 150, 200)).astype(np.uint8)
        Image.fromarray(rgb).save(folder / "images" / f"{i}.png")
        Image.fromarray(lab).save(folder / "labels" / f"{i}.png")
    return folder


@pytest.fixture(scope="module")
def sd(tmp_path_factory) -> Path:
    return save_tiny_sd(tmp_path_factory.mktemp("sd15"))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> Path:
    return write_rgb_pairs(tmp_path_factory.mktemp("he") / "pairs")


def settings(out: Path, **kw) -> dict:
    return {"out_dir": str(out), "steps": 2, "batch_size": 2, "warmup_steps": 1, "sample_every": 2, "checkpoint_every": 2,
            "sample_steps": 2, "num_threads": 1, **kw}  # fmt: skip


def test_a_plain_sd_folder_is_a_base_without_a_card(sd: Path) -> None:
    from core.pipelines.label_models import read_label_model
    from core.training.sd_local import check_local_folder

    spec = read_label_model(sd)
    assert spec.kind == "sd" and spec.domain == "rgb" and spec.channels == 3 and spec.resolution == 16
    assert (
        spec.latent["downsample"] == 2
        and spec.prompt["kind"] == "text"
        and set(spec.sha256) == {"unet", "vae"}
    )
    with pytest.raises(InputError, match="hub ids are not used"):
        check_local_folder("runwayml/stable-diffusion-v1-5")


def test_lora_finetune_controlnet_and_generation_from_local_folders(
    sd: Path, pairs: Path, tmp_path: Path
) -> None:
    """LoRA fine-tune a step, train a ControlNet a step on it, reload both from disk, generate."""
    from safetensors.torch import load_file

    from core.pipelines.controlnet import ControlNetPipeline
    from core.pipelines.label_models import read_label_model
    from core.training.sd_local import FinetuneConfig, finetune
    from core.training.train_controlnet import train as train_cn

    data = LabelDataConfig(
        pairs=(str(pairs),),
        classes=("stroma", "nuclei"),
        class_rules=(("stroma", ("stroma",)), ("nuclei", ("nuclei",))),
    )
    ft = finetune(
        FinetuneConfig(base=str(sd), data=data, prompt=PROMPT, lora_rank=4, **settings(tmp_path / "ft")),
        progress=False,
    )
    assert sorted(p.name for p in ft.iterdir()) == ["model_card.json", "unet_lora"]  # only what changed
    lora = load_file(next((ft / "unet_lora").glob("*.safetensors")))
    assert lora and all("lora" in k for k in lora)
    card = json.loads((ft / "model_card.json").read_text())
    assert (
        card["kind"] == "sd-finetune"
        and card["prompt"]["default"] == PROMPT
        and card["base"]["sha256"]["unet"]
    )

    base_img = ControlNetPipeline.from_pretrained(sd)(
        np.zeros((16, 16), np.uint8), num_inference_steps=2, prompt=PROMPT, seed=0
    ).image
    tuned = ControlNetPipeline.from_pretrained(ft)(
        np.zeros((16, 16), np.uint8), num_inference_steps=2, seed=0
    )
    assert (
        tuned.image.shape == (16, 16, 3)
        and tuned.image.dtype == np.uint8
        and tuned.provenance["prompt"] == PROMPT
    )
    assert not np.array_equal(tuned.image, base_img)  # the fused LoRA changes the UNet

    cn = train_cn(
        ControlNetConfig(
            base=str(ft), data=data, **settings(tmp_path / "cn", steps=1, sample_every=1, checkpoint_every=1)
        ),
        progress=False,
    )
    spec = read_label_model(cn)
    assert (
        spec.components["unet"] == sd.resolve()
        and spec.components["unet_lora"] == ft.resolve()
        and spec.has_controlnet
    )
    assert spec.classes == ("stroma", "nuclei") and spec.prompt == {"kind": "text", "default": PROMPT}
    layout = np.ones((16, 16), np.uint8)
    layout[4:12, 4:12] = 2
    pipe = ControlNetPipeline.from_pretrained(cn)
    out = pipe(layout, num_inference_steps=2, seed=1, conditioning_scale=0.7, guidance_scale=2.0)
    assert out.images.shape == (1, 16, 16, 3) and out.provenance["conditioning_scale"] == 0.7
    assert pipe.model.controlnet.config.conditioning_channels == 2


def test_full_finetune_writes_a_unet(sd: Path, pairs: Path, tmp_path: Path) -> None:
    from core.pipelines.label_models import read_label_model
    from core.training.sd_local import FinetuneConfig, finetune

    data = LabelDataConfig(pairs=(str(pairs),), classes=("stroma", "nuclei"), class_rules=())
    ft = finetune(
        FinetuneConfig(
            base=str(sd), data=data, prompt=PROMPT, lora_rank=0, **settings(tmp_path / "full", warmup_steps=0)
        ),
        progress=False,
    )
    spec = read_label_model(ft)
    assert spec.components["unet"] == ft.resolve() and spec.components["vae"] == sd.resolve()
    assert spec.sha256["unet"] != read_label_model(sd).sha256["unet"]
