"""A1111's model-side modules for extensions, on real files and the tiny models: `sd_models` (the checkpoint list,
lookups, hashes, switching through the queue, safe state dicts), `sd_vae`, `safe`, `prompt_parser` (conditioning
from the loaded model's encoder), `sd_hijack` (token counts, embeddings, the refused hijack), `extra_networks` (an
extension's network activated in a real generation), `textual_inversion`, `modelloader`, `lowvram`."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from modules import (
    extension_guard,
    extra_networks,
    lowvram,
    modelloader,
    prompt_parser,
    safe,
    sd_hijack,
    sd_models,
    sd_vae,
)
from modules.models.safe_load import CheckpointLoadError
from modules.processing import Job
from modules.textual_inversion import textual_inversion

SMALL = {"width": 64, "height": 64, "steps": 2, "sampler_name": "Euler", "seed": 3, "do_not_save_samples": True,
         "do_not_save_grid": True}


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def two_checkpoints(tiny_app, tiny_checkpoints):
    """tiny-sd1 at the top of the checkpoint folder, tiny-sd2 in a subfolder."""
    folder = tiny_app.cmd_opts.ckpt_dir
    os.makedirs(os.path.join(folder, "sub"))
    other = os.path.join(folder, "sub", "other.safetensors")
    shutil.copy(tiny_checkpoints["sd2"], other)
    sd_models.list_models()
    return os.path.join(folder, "tiny-sd1.safetensors"), other


def test_checkpoint_list_lookups_and_hashes(two_checkpoints):
    first, other = two_checkpoints
    first_hash, other_hash = _sha256(first)[:10], _sha256(other)[:10]
    titles = [f"sub/other.safetensors [{other_hash}]", f"tiny-sd1.safetensors [{first_hash}]"]
    assert sorted(sd_models.checkpoints_list) == titles
    assert sorted(sd_models.checkpoint_tiles()) == titles
    assert sorted(sd_models.checkpoint_tiles(use_short=True)) == [f"other [{other_hash}]", f"tiny-sd1 [{first_hash}]"]
    info = sd_models.checkpoints_list[titles[0]]
    assert info.filename == os.path.realpath(other) and info.name == "sub/other.safetensors"
    assert info.model_name == "sub_other" and info.name_for_extra == "other" and info.sha256 == _sha256(other)
    assert info.shorthash == other_hash and info.is_safetensors
    with open(other, "rb") as f:
        f.seek(0x100000)
        legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    assert info.hash == legacy == sd_models.model_hash(other)
    # lookups: aliases (hash, name, stem …), then the shortest title containing the text, with or without "[hash]"
    assert sd_models.get_closet_checkpoint_match(other_hash) is info
    assert sd_models.get_closet_checkpoint_match("other") is info
    assert sd_models.get_closet_checkpoint_match("sub/other.safetensors [0123456789]") is info
    assert sd_models.get_closet_checkpoint_match("tiny-sd1").filename == os.path.realpath(first)
    assert sd_models.get_closet_checkpoint_match("missing") is None
    assert sd_models.get_closet_checkpoint_match("") is None
    assert sd_models.checkpoint_aliases[info.model_name] is info
    assert sd_models.model_path == os.path.abspath(os.path.dirname(first))


def test_switching_through_the_queue_and_model_data(two_checkpoints, tiny_app):
    first, other = two_checkpoints
    info = sd_models.get_closet_checkpoint_match("other")
    model = sd_models.reload_model_weights(info=info)
    assert model is tiny_app.sd_model and model.checkpoint.filename == os.path.realpath(other)
    assert tiny_app.opts.sd_model_checkpoint == info.title
    assert sd_models.model_data.sd_model is model and sd_models.model_data.loaded_sd_models[0] is model
    assert sd_models.select_checkpoint() is info
    again = sd_models.reload_model_weights(info=info, forced_reload=True)
    assert again is not model and again.checkpoint.filename == model.checkpoint.filename  # read again
    back = sd_models.load_model(sd_models.get_closet_checkpoint_match("tiny-sd1"))
    assert back.checkpoint.filename == os.path.realpath(first) and not back.is_sdxl
    sd_models.unload_model_weights()
    assert tiny_app.sd_model is None and sd_models.model_data.sd_model is None
    assert sd_models.model_data.get_sd_model().checkpoint.filename == os.path.realpath(first)


def test_state_dicts_and_metadata_are_read_safely(tiny_app, tmp_path, monkeypatch):
    tensors = {"a": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b": torch.ones(4)}
    save_file(tensors, tmp_path / "weights.safetensors", metadata={"ss_tag_frequency": '{"x": {"cat": 2}}',
                                                                  "note": "plain"})
    loaded = sd_models.read_state_dict(str(tmp_path / "weights.safetensors"))
    assert set(loaded) == {"a", "b"} and torch.equal(loaded["a"], tensors["a"])
    assert sd_models.read_metadata_from_safetensors(str(tmp_path / "weights.safetensors")) == {
        "ss_tag_frequency": {"x": {"cat": 2}}, "note": "plain"}
    torch.save({"state_dict": tensors, "step": 5}, tmp_path / "plain.ckpt")
    assert torch.equal(sd_models.read_state_dict(str(tmp_path / "plain.ckpt"))["b"], tensors["b"])
    assert safe.load(str(tmp_path / "plain.ckpt"))["step"] == 5
    assert torch.equal(safe.unsafe_torch_load(str(tmp_path / "plain.ckpt"), map_location="cpu")["state_dict"]["a"],
                       tensors["a"])

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(tmp_path / "evil.ckpt", "wb") as f:
        pickle.dump({"state_dict": Payload()}, f, protocol=2)
    for load in (lambda p: sd_models.read_state_dict(p), safe.load, safe.unsafe_torch_load):
        with pytest.raises(CheckpointLoadError, match="evil.ckpt: refused to load"):
            load(str(tmp_path / "evil.ckpt"))
    assert not marker.exists()
    monkeypatch.setattr(torch, "load", safe.unsafe_torch_load)  # what some extensions do, for their own files
    assert torch.equal(sd_models.read_state_dict(str(tmp_path / "plain.ckpt"))["b"], tensors["b"])
    with pytest.raises(CheckpointLoadError, match="refused to load"):
        torch.load(str(tmp_path / "evil.ckpt"), weights_only=False)
    assert not marker.exists()


def test_vae_list_and_switching(tiny_app, tiny_checkpoints):
    vae_file = os.path.join(tiny_app.cmd_opts.vae_dir, "myvae.safetensors")
    shutil.copy(tiny_checkpoints["sd1"], vae_file)  # a full checkpoint holds a VAE the loader takes
    sd_vae.refresh_vae_list()
    assert sd_vae.vae_dict == {"myvae.safetensors": os.path.realpath(vae_file)}
    assert sd_vae.vae_path == os.path.abspath(tiny_app.cmd_opts.vae_dir)
    tiny_app.models.get()
    assert sd_vae.loaded_vae_file is None
    sd_vae.reload_vae_weights(vae_file=vae_file)
    assert sd_vae.loaded_vae_file == os.path.realpath(vae_file) and tiny_app.opts.sd_vae == "myvae.safetensors"
    sd_vae.reload_vae_weights(vae_file=None)
    assert sd_vae.loaded_vae_file is None and sd_vae.base_vae is None
    checkpoint = tiny_app.sd_model.checkpoint.filename
    assert sd_vae.find_vae_near_checkpoint(checkpoint) is None
    beside = os.path.splitext(checkpoint)[0] + ".vae.pt"
    open(beside, "wb").close()
    assert sd_vae.find_vae_near_checkpoint(checkpoint) == beside
    assert set(sd_vae.load_vae_dict(vae_file)) == set(load_file(vae_file))


def test_learned_conditioning_is_the_models_encoding(tiny_app):
    from modules import engines

    model = tiny_app.models.get()
    conds = prompt_parser.get_learned_conditioning(model, ["a [b:c:2]", "x", "a [b:c:2]"], 4)
    assert [entry.end_at_step for entry in conds[0]] == [2, 4] and conds[2] is conds[0]
    encoded, _ = engines.engine_for(model, tiny_app.opts).encode(["a b", "a c"])
    assert torch.allclose(conds[0][0].cond, encoded.embeds[0]) and torch.allclose(conds[0][1].cond, encoded.embeds[1])
    batch = prompt_parser.reconstruct_cond_batch(conds, 3)
    assert batch.shape == (3, *conds[0][1].cond.shape) and torch.equal(batch[0], conds[0][1].cond)
    multi = prompt_parser.get_multicond_learned_conditioning(model, ["a AND b:0.5", "x"], 4)
    conds_list, tensor = prompt_parser.reconstruct_multicond_batch(multi, 0)
    assert conds_list == [[(0, 1.0), (1, 0.5)], [(2, 1.0)]] and tensor.shape[0] == 3
    assert prompt_parser.parse_prompt_attention("a (b:1.5)") == [["a ", 1.0], ["b", 1.5]]
    assert prompt_parser.get_learned_conditioning_prompt_schedules(["a [b:3]"], 10) == [[(3, "a "), (10, "a b")]]
    assert prompt_parser.re_break.split("a BREAK b") == ["a", "b"]


def test_hijack_counts_tokens_lists_embeddings_and_refuses_to_patch(tiny_app):
    tiny_app.models.get()
    hijack = sd_hijack.model_hijack
    assert hijack.clip.get_prompt_lengths("a red circle") == (3, 75)
    assert hijack.get_prompt_lengths(", ".join(["cat"] * 40)) == (79, 150)
    assert hijack.optimization_method == sd_hijack.current_optimizer.name == "sdp"

    width = hijack.embedding_db.get_expected_shape()
    vectors = torch.randn(2, width)
    folder = tiny_app.cmd_opts.embeddings_dir
    textual_inversion.Embedding(vectors, "shinyword", step=7).save(os.path.join(folder, "shinyword.pt"))
    textual_inversion.Embedding(torch.randn(1, width + 4), "wideword").save(os.path.join(folder, "wideword.pt"))
    hijack.embedding_db.load_textual_inversion_embeddings(force_reload=True)
    assert list(hijack.embedding_db.word_embeddings) == ["shinyword"]
    skipped = hijack.embedding_db.skipped_embeddings["wideword"]  # what a1111-sd-webui-tagcomplete lists
    assert skipped.shape == width + 4 and skipped.filename == os.path.join(folder, "wideword.pt")
    assert "wideword" in hijack.embedding_db.skip_reasons
    embedding = hijack.embedding_db.word_embeddings["shinyword"]
    assert embedding.vectors == 2 and embedding.shape == width and embedding.step == 7
    assert torch.equal(embedding.vec, vectors) and embedding.shorthash == _sha256(embedding.filename)[:12]
    tokens = hijack.clip.tokenize(["a shinyword"])[0]
    found, length = hijack.embedding_db.find_embedding_at_position(tokens, 1)
    assert found.name == "shinyword" and length == len(tokens) - 1
    assert hijack.clip.get_prompt_lengths("a shinyword") == (3, 75)  # an embedding counts its vectors

    with pytest.raises(sd_hijack.IncompatibleExtensionError, match="patches A1111's ldm model") as refused:
        hijack.hijack(tiny_app.sd_model)
    assert isinstance(refused.value, RuntimeError)
    assert isinstance(refused.value, extension_guard.IncompatibleExtensionError)
    for call in (hijack.undo_hijack, lambda _m: sd_hijack.apply_optimizations(),
                 lambda _m: hijack.apply_optimizations(), lambda _m: sd_hijack.undo_optimizations()):
        with pytest.raises(sd_hijack.IncompatibleExtensionError):
            call(tiny_app.sd_model)


def test_a_registered_extra_network_is_activated_in_a_real_generation(tiny_app):
    calls = []

    class Recorder(extra_networks.ExtraNetwork):
        def activate(self, p, params_list):
            calls.append(("activate", [params.items for params in params_list], list(p.prompts)))

        def deactivate(self, p):
            calls.append(("deactivate",))

    recorder = Recorder("mynet")
    extra_networks.register_extra_network(recorder)
    try:
        processed = tiny_app.run_job(Job(**SMALL, prompt="a cat <mynet:foo:0.5> <mynet:bar>", batch_size=2))
        plain = tiny_app.run_job(Job(**SMALL, prompt="a cat"))
    finally:
        extra_networks.initialize()
    # A1111: activated per batch, deactivated once after the job's last batch; a registered network is activated
    # with nothing too
    assert calls == [("activate", [["foo", "0.5"], ["bar"]], ["a cat  ", "a cat  "]), ("deactivate",),
                     ("activate", [], ["a cat"]), ("deactivate",)]
    assert processed.job.extra_network_data["mynet"][0].positional == ["foo", "0.5"]
    assert not any("Unknown extra network" in comment for comment in processed.comments)
    assert processed.infotexts[0].startswith("a cat <mynet:foo:0.5> <mynet:bar>\n")
    assert plain.images[0].size == (64, 64)
    text, found = extra_networks.parse_prompt("x <lora:a:1> <mynet:b>")
    assert text == "x  " and {k: [p.items for p in v] for k, v in found.items()} == {"lora": [["a", "1"]],
                                                                                     "mynet": [["b"]]}


def test_modelloader_finds_files_and_never_downloads_offline(tmp_path, monkeypatch, network_guard):
    folder = tmp_path / "ESRGAN"
    folder.mkdir()
    (folder / "4x.pth").write_bytes(b"x")
    (folder / "notes.txt").write_text("n")
    url = "https://example.com/models/4x.pth"
    assert modelloader.load_file_from_url(url, model_dir=str(folder)) == str(folder / "4x.pth")
    assert modelloader.load_models(str(folder), ext_filter=[".pth"]) == [str(folder / "4x.pth")]
    assert modelloader.friendly_name(url) == "4x"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(modelloader.ModelDownloadError) as missing:
        modelloader.load_file_from_url("https://example.com/models/face.pth", model_dir=str(folder))
    message = str(missing.value)
    assert "https://example.com/models/face.pth" in message and str(folder) in message and "offline" in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with pytest.raises(modelloader.ModelDownloadError, match="download failed.*put it into"):
        modelloader.load_file_from_url("http://127.0.0.1:9/face.pth", model_dir=str(folder), file_name="f.pth")
    assert not (folder / "f.pth").exists() and not (folder / "f.pth.partial").exists()
    assert network_guard.attempts == []


def test_embeddings_bundled_in_memory_and_the_face_detector_offline(tmp_path, monkeypatch):
    from modules.textual_inversion import autocrop

    vectors = torch.randn(3, 8)
    embedding = textual_inversion.create_embedding_from_data({"string_to_param": {"*": vectors}, "step": 4},
                                                             "bundled", filename="style.safetensors/bundled")
    assert (embedding.name, embedding.vectors, embedding.shape, embedding.step) == ("bundled", 3, 8, 4)
    assert torch.equal(embedding.vec, vectors) and embedding.filename == "style.safetensors/bundled"
    with pytest.raises(ValueError, match="style.safetensors/odd: not recognised"):
        textual_inversion.create_embedding_from_data({"a": 1, "b": 2}, "odd", filename="style.safetensors/odd")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(modelloader.ModelDownloadError, match="face_detection_yunet_2022mar.onnx is not in"):
        autocrop.download_and_cache_models(str(tmp_path / "opencv"))
    (tmp_path / "opencv" / autocrop.FACE_DETECTOR_FILE).write_bytes(b"onnx")
    assert autocrop.download_and_cache_models(str(tmp_path / "opencv")) == str(
        tmp_path / "opencv" / autocrop.FACE_DETECTOR_FILE)
    assert sd_models.checkpoints_loaded == {}
    from modules import upscaler

    assert modelloader.Upscaler is upscaler.Upscaler


def test_lowvram_reports_the_memory_mode(tiny_app):
    model = tiny_app.models.get()
    assert not lowvram.is_enabled(model) and not lowvram.is_needed(model)
    lowvram.send_everything_to_cpu()  # nothing offloaded in the normal mode: the model stays usable
    assert tiny_app.run_job(Job(**SMALL, prompt="a cat")).images


def test_textual_inversion_templates_are_listed(tiny_app):
    folder = os.path.join(tiny_app.cmd_opts.data_dir, "textual_inversion_templates")
    os.makedirs(folder)
    with open(os.path.join(folder, "style.txt"), "w") as f:
        f.write("a painting, art by [name]\n")
    templates = textual_inversion.list_textual_inversion_templates()
    assert list(templates) == ["style.txt"] and templates["style.txt"].path == os.path.join(folder, "style.txt")
    assert textual_inversion.textual_inversion_templates is templates
    assert json.loads(json.dumps(list(templates))) == ["style.txt"]
