"""What the tiny word-level tokenizers cannot show, on real ones: SmolLM2's byte-level BPE (a word
after a space is another token; label words of several tokens; a searched prompt written out as
text and read back; the chat template) and MiniLM's WordPiece (sub-words of the input pooled by a
head, truncation at sub-word boundaries)."""

import pytest
import torch
from conftest import SENTENCES

from prompttune import Backbone, ClassificationConfig, ConfigError, Example, PromptModel, TrainConfig, train
from prompttune.core.vocabulary import plain_tokens

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def smollm2():
    return Backbone.from_pretrained("smollm2-135m-instruct")


@pytest.fixture(scope="module")
def minilm():
    return Backbone.from_pretrained("all-MiniLM-L6-v2")


def config(**changes):
    values = dict(
        labels=("negative", "positive"),
        template="Review: {text} All in all, it was {mask}",
        verbalizer=(("terrible",), ("great",)),
    )
    values.update(changes)
    return ClassificationConfig(**values)


def test_label_words_are_read_as_the_model_would_spell_them(smollm2):
    tok = smollm2.tokenizer
    after_space = PromptModel.create(smollm2, "hard_prompt", config())
    # In running text a label word follows a space: "Ġgreat", not "great".
    assert after_space.task.word_ids.tolist() == [tok(" terrible")["input_ids"][0], tok(" great")["input_ids"][0]]
    assert tok(" great")["input_ids"] != tok("great")["input_ids"]
    # In a chat the answer starts its own line: "great".
    chat = PromptModel.create(
        smollm2,
        "hard_prompt",
        config(template="Review: {text}", chat=True, instruction="Was the review great or terrible?"),
    )
    assert chat.task.word_ids.tolist() == [tok("terrible")["input_ids"][0], tok("great")["input_ids"][0]]


def test_a_label_word_of_several_tokens_is_read_at_its_first(smollm2):
    tok = smollm2.tokenizer
    word = "unwatchable"
    pieces = tok(" " + word)["input_ids"]
    assert len(pieces) > 1
    model = PromptModel.create(smollm2, "hard_prompt", config(verbalizer=((word,), ("great",))))
    assert model.task.word_ids.tolist()[0] == pieces[0]
    assert tok(" unwieldy")["input_ids"][0] == pieces[0]  # "Ġunw" both
    with pytest.raises(ConfigError, match="'unwieldy' .* and 'unwatchable' .* start with the same token 'Ġunw'"):
        PromptModel.create(smollm2, "hard_prompt", config(verbalizer=((word,), ("unwieldy",))))


def test_the_chat_prompt_is_the_tokenizers_own(smollm2):
    tok = smollm2.tokenizer
    model = PromptModel.create(
        smollm2,
        "hard_prompt",
        config(template="Review: {text}", chat=True, instruction="Is this review positive or negative?"),
    )
    feature = model.task.encode(Example("A gripping, funny film."))
    expected = tok.apply_chat_template(
        [
            {"role": "system", "content": "Is this review positive or negative?"},
            {"role": "user", "content": "Review: A gripping, funny film."},
        ],
        add_generation_prompt=True,
        return_dict=True,
    )["input_ids"]
    assert feature["input_ids"] == list(expected)
    assert tok.decode(feature["input_ids"][-4:]) == "<|im_start|>assistant\n"  # the label word comes next


def test_a_searched_prompt_reads_back_as_the_tokens_it_found(smollm2):
    tokens = plain_tokens(smollm2.tokenizer, limit=300)
    tok = smollm2.tokenizer
    for token in tokens:
        assert tok(tok.decode([token]), add_special_tokens=False)["input_ids"] == [token]
    examples = [Example(t, label=("positive" if l == "1" else "negative")) for t, l in SENTENCES][:4]
    model = PromptModel.create(
        smollm2,
        "autoprompt",
        config(template="{prompt} Review: {text} All in all, it was {mask}"),
        {"num_tokens": 2, "num_candidates": 4},
    )
    train(model, examples, None, TrainConfig(max_steps=1, batch_size=4, progress=False))
    hard = model.method.exported(model)
    found = model.method.token_ids().tolist()
    ids = hard.task.encode(Example("a fine film"))["input_ids"]
    assert any(ids[i : i + len(found)] == found for i in range(len(ids)))
    with torch.no_grad():
        torch.testing.assert_close(
            hard.predict_proba([Example("a fine film")]),
            model.predict_proba([Example("a fine film")]),
            rtol=1e-4,
            atol=1e-5,
        )


def test_wordpiece_sub_words_are_pooled_and_truncation_keeps_whole_sub_words(minilm):
    model = PromptModel.create(
        minilm,
        "soft_prompt",
        config(template="Review: {text} Overall it was", verbalizer=None, max_length=20),
        {"num_virtual_tokens": 2},
    )
    tok = minilm.tokenizer
    text = "an unbelievably overwrought melodrama"
    feature = model.task.encode(Example(text))
    pooled = [t for t, keep in zip(feature["input_ids"], feature["pool_mask"]) if keep]
    assert tok.decode(pooled) == text and any(p.startswith("##") for p in tok.convert_ids_to_tokens(pooled))
    long = model.task.encode(Example(text + " " + "that never ever stops " * 10))
    assert len(long["input_ids"]) == 20
    kept = tok.decode([t for t, keep in zip(long["input_ids"], long["pool_mask"]) if keep])
    assert (text + " " + "that never ever stops " * 10).startswith(kept) and tok.decode(long["input_ids"]).endswith(
        "overall it was [SEP]"
    )
