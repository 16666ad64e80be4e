"""Tiny random models of every family, built from configs with a word-level tokenizer: no downloads.

Each is saved to a folder with `save_pretrained`, so tests load it the way users load real models.
"""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = [
    "the",
    "a",
    "an",
    "movie",
    "film",
    "story",
    "acting",
    "plot",
    "it",
    "was",
    "is",
    "this",
    "that",
    "and",
    "but",
    "not",
    "very",
    "really",
    "quite",
    "great",
    "good",
    "wonderful",
    "excellent",
    "fun",
    "loved",
    "best",
    "terrible",
    "bad",
    "awful",
    "boring",
    "poor",
    "hated",
    "worst",
    "dull",
    "positive",
    "negative",
    "yes",
    "no",
    "maybe",
    "review",
    "sentence",
    "question",
    "answer",
    "what",
    "who",
    "where",
    "when",
    "why",
    "how",
    "i",
    "you",
    "we",
    "they",
    "he",
    "she",
    "one",
    "two",
    "three",
    "four",
    "five",
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "house",
    "car",
    "tree",
    ".",
    ",",
    "!",
    "?",
]

# A chat template in the tiny vocabulary (ChatML's shape, with words of it for the roles): what a
# chat model's tokenizer carries, so instruction and chat prompts can be tested without one.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ {'system': 'what', 'user': 'who', 'assistant': 'answer'}[m['role']] }} , "
    "{{ m['content'] }} . {% endfor %}{% if add_generation_prompt %}answer ,{% endif %}"
)

SPECIALS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<mask>",
    "<|endoftext|>",
    "<extra_id_0>",
]

FAMILIES = ("bert", "bert_encoder", "gpt2", "llama", "t5", "bart")


def vocab() -> dict[str, int]:
    return {token: i for i, token in enumerate(SPECIALS + WORDS)}


def tokenizer(family: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    v = vocab()
    unk = {"bert": "[UNK]", "bert_encoder": "[UNK]"}.get(family, "<unk>")
    tok = Tokenizer(models.WordLevel(vocab=v, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if family in ("bert", "bert_encoder"):
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", v["[CLS]"]), ("[SEP]", v["[SEP]"])],
        )
        specials = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    elif family == "gpt2":
        specials = dict(eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<unk>")
    elif family == "llama":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", v["<s>"])]
        )
        specials = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", chat_template=CHAT_TEMPLATE)
    elif family == "t5":
        tok.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", v["</s>"])]
        )
        specials = dict(
            pad_token="<pad>", eos_token="</s>", unk_token="<unk>", additional_special_tokens=["<extra_id_0>"]
        )
    elif family == "bart":
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A </s>",
            pair="<s> $A </s> </s> $B </s>",
            special_tokens=[("<s>", v["<s>"]), ("</s>", v["</s>"])],
        )
        specials = dict(bos_token="<s>", eos_token="</s>", pad_token="<pad>", unk_token="<unk>", mask_token="<mask>")
    else:
        raise ValueError(family)
    return PreTrainedTokenizerFast(tokenizer_object=tok, **specials)


# Weights drawn wider than transformers' default (0.02): at that scale a 2-layer, 32-wide random
# model's output barely depends on which words it reads, and no prompt could fit even 8 examples.
# (T5 needs no change: it already scales its initialisation by d_model ** -0.5.)
INIT_STD = 0.2


def model(family: str):
    import transformers as tf

    v = vocab()
    size = len(v)
    common = dict(vocab_size=size)
    if family in ("bert", "bert_encoder"):
        config = tf.BertConfig(
            **common,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=128,
            pad_token_id=v["[PAD]"],
            initializer_range=INIT_STD,
            hidden_dropout_prob=0.1,
            attention_probs_dropout_prob=0.1,
        )
        return (tf.BertForMaskedLM if family == "bert" else tf.BertModel)(config)
    if family == "gpt2":
        config = tf.GPT2Config(
            **common,
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=128,
            initializer_range=INIT_STD,
            bos_token_id=v["<|endoftext|>"],
            eos_token_id=v["<|endoftext|>"],
        )
        return tf.GPT2LMHeadModel(config)
    if family == "llama":
        # Grouped-query attention: 4 query heads share 2 key/value heads.
        config = tf.LlamaConfig(
            **common,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            initializer_range=INIT_STD,
            bos_token_id=v["<s>"],
            eos_token_id=v["</s>"],
            pad_token_id=None,
        )
        return tf.LlamaForCausalLM(config)
    if family == "t5":
        config = tf.T5Config(
            **common,
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            pad_token_id=v["<pad>"],
            eos_token_id=v["</s>"],
            decoder_start_token_id=v["<pad>"],
        )
        return tf.T5ForConditionalGeneration(config)
    if family == "bart":
        config = tf.BartConfig(
            **common,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            init_std=INIT_STD,
            pad_token_id=v["<pad>"],
            bos_token_id=v["<s>"],
            eos_token_id=v["</s>"],
            decoder_start_token_id=v["</s>"],
            forced_eos_token_id=None,
        )
        return tf.BartForConditionalGeneration(config)
    raise ValueError(family)


def save(family: str, folder: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    model(family).save_pretrained(folder)
    tokenizer(family).save_pretrained(folder)
    return folder


def _byte_level_alphabet() -> list[str]:
    """GPT-2's printable stand-ins for the 256 byte values, in byte order."""
    visible = (
        list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars, extra = dict(zip(visible, visible)), 0
    for byte in range(256):
        if byte not in chars:
            chars[byte] = 256 + extra
            extra += 1
    return [chr(chars[b]) for b in range(256)]


def save_gguf(path: Path, seed: int = 0, quantized: bool = True) -> Path:
    """A tiny Llama as a GGUF file, written with the `gguf` package the way llama.cpp writes one:
    a byte-level BPE tokenizer of 263 tokens, 2 layers of width 32 with grouped-query attention,
    its matrices in Q8_0 (or float32 with `quantized=False`: another "quantisation" of the same
    model)."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    merges = ["h e", "l l", "Ġ w", "o r", "Ġ g", "Ġ b"]
    tokens = _byte_level_alphabet() + [m.replace(" ", "") for m in merges] + ["<|endoftext|>"]
    vocab, hidden, ff, layers, heads, kv_heads = len(tokens), 32, 64, 2, 4, 2
    head_dim = hidden // heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(128)
    writer.add_embedding_length(hidden)
    writer.add_block_count(layers)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([1] * (vocab - 1) + [3])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(vocab - 1)
    writer.add_eos_token_id(vocab - 1)

    def matrix(name, rows, columns):
        weights = (rng.standard_normal((rows, columns)) * INIT_STD).astype(np.float32)
        if quantized:
            packed = gguf.quants.quantize(weights, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, packed, raw_shape=packed.shape, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, weights)

    matrix("token_embd.weight", vocab, hidden)
    for i in range(layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        matrix(f"blk.{i}.attn_q.weight", hidden, hidden)
        matrix(f"blk.{i}.attn_k.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_v.weight", kv_heads * head_dim, hidden)
        matrix(f"blk.{i}.attn_output.weight", hidden, hidden)
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
        matrix(f"blk.{i}.ffn_gate.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_up.weight", ff, hidden)
        matrix(f"blk.{i}.ffn_down.weight", hidden, ff)
    writer.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    matrix("output.weight", vocab, hidden)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
