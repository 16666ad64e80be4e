"""Models users have: GGUF files dequantised once into a checked cache, the fingerprint that ties a
prompt to the GGUF it was trained on, and the frozen model loaded in another dtype or through a
device map (prompts stay float32)."""

import json

import pytest
import tiny
import torch
from conftest import SENTENCES, task_config

from prompttune import (
    ArtifactError,
    Backbone,
    Example,
    ModelError,
    PromptModel,
    TrainConfig,
    load_prompt,
    save_prompt,
    train,
)
from prompttune.cli import main
from prompttune.core import weights
from prompttune.storage import sha256_file


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PROMPTTUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gguf")
    return {
        "q8": tiny.save_gguf(folder / "tiny-q8_0.gguf"),
        "f32": tiny.save_gguf(folder / "tiny-f32.gguf", quantized=False),
    }


def logits(backbone, text="hello world"):
    ids = torch.tensor([backbone.tokenizer(text)["input_ids"]])
    with torch.no_grad():
        return backbone.model(ids).logits


def test_a_gguf_file_is_dequantised_once_into_a_checked_cache(ggufs, cache, monkeypatch):
    from transformers import AutoModelForCausalLM

    gguf = ggufs["q8"]
    digest = sha256_file(gguf)
    backbone = Backbone.from_pretrained(str(gguf))
    folder = cache / "gguf" / digest
    source = json.loads((folder / weights.MANIFEST).read_text())
    assert source["gguf_sha256"] == digest and source["gguf_file"] == "tiny-q8_0.gguf"
    assert {p.name for p in folder.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        weights.MANIFEST,
    }
    assert (backbone.kind, backbone.config.num_key_value_heads, backbone.weights_sha256) == ("decoder", 2, digest)
    # The cache holds exactly what transformers' own GGUF loader makes of the file.
    direct = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    ids = torch.tensor([backbone.tokenizer("hello world")["input_ids"]])
    reference = logits(backbone)
    with torch.no_grad():
        assert torch.equal(direct(ids).logits, reference)

    def no_conversion(*args):
        raise AssertionError("converted again")

    monkeypatch.setattr(weights, "_dequantise", no_conversion)
    assert torch.equal(logits(Backbone.from_pretrained(str(gguf))), reference)  # read from the cache
    # The folder and --gguf-file form names the same file.
    again = Backbone.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    assert again.name_or_path == str(gguf) and again.weights_sha256 == digest
    monkeypatch.undo()

    # A damaged cache is made again from the GGUF file; loaded directly, it is refused.
    del backbone, again  # (their weights may be mapped from the file about to be damaged)
    stored = folder / "model.safetensors"
    stored.write_bytes(stored.read_bytes()[:-8] + b"damaged!")
    with pytest.raises(ModelError, match="the cache is damaged: delete"):
        Backbone.from_pretrained(str(folder))
    assert torch.equal(logits(Backbone.from_pretrained(str(gguf))), reference)
    assert sorted(p.name for p in (cache / "gguf").iterdir()) == [digest]  # nothing left over


def test_a_prompt_trained_on_a_gguf_file_loads_on_its_cache_and_not_on_another_quantisation(ggufs, cache, tmp_path):
    backbone = Backbone.from_pretrained(str(ggufs["q8"]))
    config = task_config(template="{text} so")
    model = PromptModel.create(backbone, "soft_prompt", config, {"num_virtual_tokens": 3})
    folder = save_prompt(model, tmp_path / "p")
    assert json.loads((folder / "prompt.json").read_text())["base_model"]["weights_sha256"] == sha256_file(ggufs["q8"])
    texts = [Example("hello world"), Example("well")]
    expected = model.predict_proba(texts)
    for loaded in (
        load_prompt(folder),  # the GGUF file it names, through the cache
        load_prompt(folder, backbone=Backbone.from_pretrained(str(cache / "gguf" / sha256_file(ggufs["q8"])))),
    ):
        torch.testing.assert_close(loaded.predict_proba(texts), expected, rtol=0, atol=0)
    with pytest.raises(ArtifactError, match="weights_sha256: artifact has"):
        load_prompt(folder, backbone=Backbone.from_pretrained(str(ggufs["f32"])))


def test_a_file_that_is_not_gguf_is_refused_in_one_line(tmp_path, cache, capsys):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF but not really")
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    code = main(
        [
            "train",
            "--model",
            str(tmp_path),
            "--gguf-file",
            "broken.gguf",
            "--method",
            "soft_prompt",
            "--train",
            str(data),
            "--output",
            str(tmp_path / "out"),
            "--no-progress",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "transformers cannot read this GGUF file" in err, err
    assert not (cache / "gguf").exists() or not any((cache / "gguf").iterdir())
    assert main(["predict", "--prompt", str(tmp_path), "--gguf-file", "x.gguf", "hi"]) == 2
    assert "--gguf-file" in capsys.readouterr().err


def test_the_frozen_model_in_bfloat16_through_a_device_map_trains_a_float32_prompt(ggufs, cache, tmp_path, capsys):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    out = tmp_path / "out"
    code = main(
        [
            "train",
            "--model",
            str(ggufs["q8"]),
            "--dtype",
            "bfloat16",
            "--device-map",
            "auto",
            "--method",
            "prefix",
            "--num-virtual-tokens",
            "2",
            "--option",
            "hidden_size=8",
            "--train",
            str(data),
            "--eval",
            str(data),
            "--template",
            "{text} so",
            "--verbalizer",
            "0:bad,1:good",
            "--max-steps",
            "2",
            "--batch-size",
            "4",
            "--output",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    args = json.loads((out / "train_args.json").read_text())
    assert args["dtype"] == "bfloat16"
    backbone = Backbone.from_pretrained(str(ggufs["q8"]), dtype="bfloat16", device_map="auto")
    assert backbone.model.dtype == torch.bfloat16 and backbone.device.type == "cpu"  # no GPU here: all on the CPU
    model = load_prompt(out, backbone=backbone)
    assert all(p.dtype == torch.float32 for p in model.method.parameters())
    assert model.predict_proba([Example("hello world")]).dtype == torch.float32
    code = main(["predict", "--prompt", str(out), "--dtype", "bfloat16", "hello world"])
    assert code == 0 and json.loads(capsys.readouterr().out)["label"] in ("0", "1")


def test_prompt_parameters_stay_float32_on_a_half_precision_model(ggufs, cache):
    backbone = Backbone.from_pretrained(str(ggufs["q8"]), dtype="float16")
    model = PromptModel.create(backbone, "soft_prompt", task_config(template="{text} so"), {"num_virtual_tokens": 2})
    assert model.method.prompt.dtype == torch.float32 and backbone.model.dtype == torch.float16
    examples = [Example(t, label=l) for t, l in SENTENCES]
    before = model.method.prompt.detach().clone()
    train(model, examples, None, TrainConfig(max_steps=2, batch_size=4, lr=0.1, progress=False))
    assert not torch.equal(before, model.method.prompt) and model.method.prompt.dtype == torch.float32
    with pytest.raises(ModelError, match="--dtype: 'float64' is not one of"):
        Backbone.from_pretrained(str(ggufs["q8"]), dtype="float64")
