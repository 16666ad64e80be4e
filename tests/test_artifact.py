"""Artifacts are tiny, self-describing, checked when loaded, and written atomically."""

import json

import pytest
import torch
from conftest import task_config

from prompttune import ArtifactError, Example, PromptModel, load_prompt, save_prompt
from prompttune.artifacts.artifact import META, TENSORS


@pytest.fixture
def saved(load, tmp_path):
    model = PromptModel.create(load("bert"), "soft_prompt", task_config(), {"num_virtual_tokens": 4})
    save_prompt(model, tmp_path / "p")
    return model, tmp_path / "p"


def test_artifact_holds_only_the_prompt(saved):
    model, path = saved
    meta = json.loads((path / META).read_text())
    assert meta["tensors"] == {"method.prompt": [4, 32]}
    assert meta["method"] == "soft_prompt" and meta["method_config"]["num_virtual_tokens"] == 4
    assert meta["task_config"]["template"] == "{text} it was {mask} ."
    assert meta["base_model"]["architecture"] == "BertForMaskedLM"
    assert meta["library_version"]
    assert (path / TENSORS).stat().st_size < 4 * 32 * 4 + 1024


def test_loading_onto_another_base_model_fails_clearly(saved, model_dirs, tmp_path):
    import tiny

    from prompttune import Backbone

    _, path = saved
    other = Backbone.from_pretrained(str(tiny.save("bert", tmp_path / "other", seed=1)))
    with pytest.raises(ArtifactError, match=r"made for base model .* embedding_sha256: artifact has"):
        load_prompt(path, backbone=other)
    gpt2 = Backbone.from_pretrained(str(model_dirs["gpt2"]))
    with pytest.raises(
        ArtifactError, match=r"architecture: artifact has 'BertForMaskedLM', model has 'GPT2LMHeadModel'"
    ):
        load_prompt(path, backbone=gpt2)


def test_loading_checks_the_files(saved, load):
    _, path = saved
    meta = json.loads((path / META).read_text())
    (path / META).write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ArtifactError, match=r"'format_version' is 99"):
        load_prompt(path, backbone=load("bert"))
    (path / META).write_text(json.dumps({**meta, "method_config": {"num_virtual_tokens": 4, "colour": "red"}}))
    with pytest.raises(ArtifactError, match=r"unknown SoftPromptConfig field\(s\) \['colour'\]"):
        load_prompt(path, backbone=load("bert"))
    (path / META).write_text(json.dumps({**meta, "tensors": {"method.prompt": [5, 32]}}))
    with pytest.raises(ArtifactError, match=r"do not match"):
        load_prompt(path, backbone=load("bert"))
    (path / META).write_text(json.dumps(meta))
    (path / TENSORS).write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match=r"does not match the sha256 prompt.json records"):
        load_prompt(path, backbone=load("bert"))
    (path / META).write_text(json.dumps({k: v for k, v in meta.items() if k != "files"}))  # an artifact without sha256s
    with pytest.raises(ArtifactError, match=r"cannot read tensors"):
        load_prompt(path, backbone=load("bert"))
    (path / META).write_text("{")
    with pytest.raises(ArtifactError, match=r"prompt.json: not valid JSON"):
        load_prompt(path, backbone=load("bert"))
    with pytest.raises(ArtifactError, match=r"no such prompt folder"):
        load_prompt(path / "missing", backbone=load("bert"))


def test_a_failed_save_keeps_the_previous_artifact(saved, monkeypatch):
    model, path = saved
    before = {name: (path / name).read_bytes() for name in (META, TENSORS)}
    with torch.no_grad():
        model.method.prompt.add_(1.0)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("prompttune.storage.Transaction.write_json", broken)
    with pytest.raises(OSError):
        save_prompt(model, path)
    assert {name: (path / name).read_bytes() for name in (META, TENSORS)} == before
    assert sorted(p.name for p in path.iterdir()) == sorted([META, TENSORS])
    load_prompt(path, backbone=model.backbone)


def test_a_prompt_trained_in_float32_loads_onto_the_model_in_bfloat16(saved, model_dirs):
    from prompttune import Backbone

    _, path = saved
    bf16 = Backbone.from_pretrained(str(model_dirs["bert"]), dtype=torch.bfloat16)
    loaded = load_prompt(path, backbone=bf16)
    assert loaded.method.prompt.shape == (4, 32)
    texts = [Example("the movie was great"), Example("a terrible film")]
    probabilities = loaded.predict_proba(texts)
    assert loaded.method.prompt.dtype == torch.float32  # the prompt stays as trained; the model computes in bf16
    # What the float32 model gives, to bf16's precision (8 bits of mantissa).
    torch.testing.assert_close(probabilities, load_prompt(path).predict_proba(texts), atol=2e-2, rtol=0)
    assert not torch.equal(probabilities, load_prompt(path).predict_proba(texts))  # it really ran in bf16


def test_the_base_models_fingerprint_is_computed_once_while_the_model_stays_as_it_is(model_dirs, tmp_path, monkeypatch):
    """Training and saving a prompt reads the vocabulary's fingerprint once; an embedding changed
    in place is fingerprinted again."""
    from prompttune.api import train_prompt
    from prompttune.core import backbone as module

    calls = []
    real = module.tokenizer_fingerprint
    monkeypatch.setattr(module, "tokenizer_fingerprint", lambda tokenizer: calls.append(1) or real(tokenizer))
    data = tmp_path / "train.tsv"
    data.write_text("text\tlabel\nthe movie was great\t1\na terrible film\t0\n")
    train_prompt(
        model=str(model_dirs["bert"]),
        method="soft_prompt",
        train=str(data),
        output=str(tmp_path / "out"),
        method_options={"num_virtual_tokens": 2},
        template="{text} it was {mask} .",
        verbalizer={"0": ["bad"], "1": ["good"]},
        max_steps=1,
        progress=False,
    )
    assert len(calls) == 1
    backbone = module.Backbone.from_pretrained(str(model_dirs["bert"]))
    first = backbone.fingerprint()
    assert backbone.fingerprint() == first and len(calls) == 2
    with torch.no_grad():
        backbone.input_embeddings.weight.mul_(2.0)
    assert backbone.fingerprint()["embedding_sha256"] != first["embedding_sha256"] and len(calls) == 3
