"""Table-to-text on E2E: prefix tuning and soft prompts against full fine-tuning and PEFT's equivalents.

No pretrained decoder can be downloaded here, so unless `--model` names a local model folder (for
example a copy of GPT-2, the paper's setting), the script first pretrains a small GPT-2-style
language model on the reference texts of the E2E and WebNLG 2017 training sets (a byte-level BPE
tokenizer trained on the same texts, then a few transformer layers trained for minutes on the CPU),
saves it, and from then on uses it frozen:

- `prefix` (Li & Liang 2021: 10 tokens, MLP reparameterisation of width 512),
- `soft_prompt` (Lester et al. 2021: 20 tokens),
- `full_finetune`, the baseline,
- PEFT `PrefixTuningConfig` (10 tokens, `prefix_projection=True`, hidden 512) and PEFT
  `PromptTuningConfig` (20 tokens, SAMPLE_VOCAB) on the same model, each trained by a plain loop with
  the same batches, optimiser, learning rate and schedule as `prefix` and `soft_prompt`,

each on the same E2E training subset for the same number of steps, then scored with BLEU, chrF,
ROUGE-L against all references of an E2E dev subset (greedy decoding). The script also measures
what the prompt costs at generation time: seconds per generated token with a prefix, with a soft
prompt and with the bare model, on the same inputs, in the same process.

    python -m benchmarks.e2e_generation                       # ~25 minutes on 2 CPU cores
    python -m benchmarks.e2e_generation --model /path/to/gpt2 # the paper's model, if you have it
    python -m benchmarks.e2e_generation --pretrain-steps 50 --steps 10 --dev-size 10 --no-write  # a quick check
    python -m benchmarks.e2e_generation --pretrain-only       # only the decoder the E2E/WebNLG sweeps use
    python -m benchmarks.e2e_generation --methods peft_prompt_tuning --merge  # one method; keep the other rows
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks import peft_loop
from benchmarks.common import RESULTS, SHARED, environment, write_results
from benchmarks.peft_loop import padded_pairs, pair_encoder, peft_model

CACHE = Path(__file__).resolve().parent / ".cache"
METHODS = ("prefix", "soft_prompt", "full_finetune", "peft_prefix_tuning", "peft_prompt_tuning")
# Each PEFT method and the prompttune method whose settings and learning rate it is trained with.
PEFT_ANCHORS = {"peft_prefix_tuning": "prefix", "peft_prompt_tuning": "soft_prompt"}


# ---- data ------------------------------------------------------------------------------------


def e2e_rows(name: str) -> list[tuple[str, str]]:
    path = SHARED / "e2e" / name
    if not path.is_file():
        raise SystemExit(f"{path} not found: the benchmark reads E2E from ../shared/data/e2e")
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["mr"].strip(), row["ref"].strip()) for row in csv.DictReader(handle)]


def webnlg_texts() -> list[str]:
    path = SHARED / "webnlg2017" / "train.jsonl"
    texts = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            texts.extend(lex["text"].strip() for lex in json.loads(line)["lex"] if lex.get("text", "").strip())
    return texts


def write_subsets(work: Path, train_size: int, dev_size: int, seed: int) -> tuple[Path, Path]:
    """A seeded random subset of E2E training pairs, and the first `dev_size` dev MRs with all their
    references (the dev set lists each MR once per reference)."""
    train = e2e_rows("trainset.csv")
    random.Random(seed).shuffle(train)
    dev, seen = [], []
    for mr, ref in e2e_rows("devset.csv"):
        if mr not in seen:
            if len(seen) == dev_size:
                continue
            seen.append(mr)
        dev.append((mr, ref))
    paths = []
    for name, rows in (("train", train[:train_size]), ("dev", dev)):
        path = work / f"e2e_{name}.csv"
        with open(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["mr", "ref"])
            writer.writerows(rows)
        paths.append(path)
    return paths[0], paths[1]


# ---- the small pretrained decoder ------------------------------------------------------------


def pretrain(folder: Path, args) -> dict:
    """Byte-level BPE tokenizer and a GPT-2-style LM trained on E2E + WebNLG reference texts."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, get_scheduler

    texts = [ref for _, ref in e2e_rows("trainset.csv")] + webnlg_texts()
    random.Random(0).shuffle(texts)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=args.vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    eos = tokenizer.eos_token_id
    stream = []
    for ids in tokenizer([" " + t for t in texts], add_special_tokens=False)["input_ids"]:
        stream.extend(ids + [eos])
    block = args.block_size
    blocks = torch.tensor(stream[: len(stream) // block * block]).view(-1, block)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=args.width,
        n_layer=args.layers,
        n_head=args.heads,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.pretrain_lr, weight_decay=0.01)
    scheduler = get_scheduler(
        "cosine", optimizer, num_warmup_steps=args.pretrain_steps // 20, num_training_steps=args.pretrain_steps
    )
    model.train()
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    losses = []
    for step in range(args.pretrain_steps):
        rows = blocks[torch.randint(len(blocks), (args.pretrain_batch,), generator=generator)]
        loss = model(input_ids=rows, labels=rows).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if (step + 1) % 100 == 0:
            print(f"pretrain step {step + 1}/{args.pretrain_steps} loss {sum(losses[-100:]) / 100:.3f}", flush=True)
    seconds = time.perf_counter() - start
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    info = {
        "texts": len(texts),
        "tokens": len(stream),
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": args.pretrain_steps,
        "batch": args.pretrain_batch,
        "block": block,
        "seconds": round(seconds, 1),
        "final_loss": sum(losses[-100:]) / min(100, len(losses)),
        "config": config.to_diff_dict(),
    }
    (folder / "pretraining.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ---- the runs ----------------------------------------------------------------------------------


def run_prompttune(method: str, args, model_path: str, train_path: Path, dev_path: Path, out: Path) -> dict:
    from prompttune import Backbone, PromptModel, TrainConfig, evaluate, save_prompt, train
    from prompttune.api import artifact_bytes
    from prompttune.tasks import GenerationConfig
    from prompttune.tasks.data import load_generation_examples

    train_examples = load_generation_examples(str(train_path), "mr", "ref")
    dev_examples = load_generation_examples(str(dev_path), "mr", "ref")
    torch.manual_seed(args.seed)
    backbone = Backbone.from_pretrained(model_path)
    options = {"prefix": {"num_virtual_tokens": 10, "hidden_size": 512}, "soft_prompt": {"num_virtual_tokens": 20}}.get(
        method, {}
    )
    task = GenerationConfig(max_source_length=96, max_target_length=64)
    model = PromptModel.create(backbone, method, task, options)
    config = TrainConfig(
        max_steps=args.steps, batch_size=args.batch_size, lr=lr_for(method, args), seed=args.seed, progress=False
    )
    result = train(model, train_examples, None, config)
    scores = evaluate(model, dev_examples, batch_size=32)
    save_prompt(model, out)
    return {
        "scores": scores,
        "train_seconds": result.seconds,
        "steps": result.steps,
        "trainable_parameters": model.count_parameters()["trainable"],
        "artifact_bytes": artifact_bytes(out),
        "lr": config.lr,
        "samples": model.task.generate_texts(model, dev_examples[:3]),
    }


def lr_for(method: str, args) -> float:
    """The learning rate given on the command line, else the prompttune method's default (PEFT's
    prefix tuning gets prompttune prefix's)."""
    from prompttune.methods import method_class

    method = PEFT_ANCHORS.get(method, method)
    given = {"prefix": args.prefix_lr, "soft_prompt": args.soft_lr, "full_finetune": args.finetune_lr}[method]
    return given or method_class(method).default_lr


def run_peft(kind: str, args, model_path: str, train_path: Path, dev_path: Path, out: Path) -> dict:
    """PEFT's prefix tuning (10 tokens, projection of width 512) or prompt tuning (20 tokens, sampled
    vocabulary, as prompttune's soft prompt starts on a task without labels) with the same data,
    batches, optimiser, learning rate and schedule as the prompttune method it is measured against;
    decoded greedily with PEFT's `generate`, one source at a time: in a left-padded batch PEFT's
    prompt tuning puts its virtual tokens before the padding and drops position ids, so a row's
    tokens sit at other positions than in training. Padded batches of 32 are scored too, beside."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prompttune.tasks.data import group_references, load_generation_examples
    from prompttune.tasks.metrics import generation_metrics

    train_examples = load_generation_examples(str(train_path), "mr", "ref")
    dev = group_references(load_generation_examples(str(dev_path), "mr", "ref"))
    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.pad_token = tokenizer.eos_token
    base, model = peft_model(kind, model_path, AutoModelForCausalLM.from_pretrained(model_path))
    eos = tokenizer.eos_token_id
    encode = pair_encoder(tokenizer, 96, 64)
    features = [encode(e.text, t) for e in train_examples for t in e.targets]
    params = peft_loop.trainable(model)

    def loss_of(chosen):
        input_ids, mask, labels = padded_pairs([features[i] for i in chosen], eos)
        return model(input_ids=input_ids, attention_mask=mask, labels=labels).loss

    seconds = peft_loop.train(
        model,
        base,
        [{"params": params, "lr": lr_for(kind, args)}],
        loss_of,
        len(features),
        args.steps,
        args.batch_size,
        args.seed,
    )
    step = args.steps
    model.eval()
    prompts = [encode(e.text)[0] for e in dev]

    def decode(batch_size: int) -> list[str]:
        texts = []
        with torch.no_grad():
            for begin in range(0, len(prompts), batch_size):
                chunk = prompts[begin : begin + batch_size]
                width = max(len(p) for p in chunk)
                input_ids = torch.tensor([[eos] * (width - len(p)) + p for p in chunk])
                mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk])
                generated = model.generate(
                    input_ids=input_ids,
                    attention_mask=mask,
                    max_new_tokens=64,
                    do_sample=False,
                    pad_token_id=eos,
                    eos_token_id=eos,
                )
                texts.extend(t.strip() for t in tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True))
        return texts

    references = [list(e.targets) for e in dev]
    hypotheses = decode(1)
    batched = decode(32)
    model.save_pretrained(out)
    return {
        "scores": generation_metrics(hypotheses, references),
        "decoded": "one source at a time",
        "scores_padded_batches": generation_metrics(batched, references)
        | {"batch_size": 32, "outputs_changed": sum(a != b for a, b in zip(hypotheses, batched))},
        "train_seconds": seconds,
        "steps": step,
        "trainable_parameters": sum(p.numel() for p in params),
        "artifact_bytes": sum(f.stat().st_size for f in out.rglob("*") if f.is_file()),
        "lr": lr_for(kind, args),
        "samples": hypotheses[:3],
    }


def generation_overhead(args, model_path: str, dev_path: Path, prompts: dict) -> dict:
    """Seconds per generated token for the same 32 sources: bare model, with the trained prefix and
    with the trained soft prompt; every configuration generates exactly the same number of tokens."""
    from prompttune import Backbone, load_prompt
    from prompttune.core.backbone import ModelInputs
    from prompttune.tasks.data import group_references, load_generation_examples

    backbone = Backbone.from_pretrained(model_path)
    dev = group_references(load_generation_examples(str(dev_path), "mr", "ref"))[:32]
    loaded = {name: load_prompt(path, backbone=backbone) for name, path in prompts.items()}
    any_model = next(iter(loaded.values()))
    batch = any_model.task.collate([any_model.task.encode(e) for e in dev], with_labels=False, for_generation=True)
    new_tokens = args.overhead_tokens
    options = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)

    def bare():
        inputs = ModelInputs(backbone.embed(batch["input_ids"]), batch["attention_mask"])
        return backbone.generate(inputs, **options)

    runs = {"bare model": bare}
    for name, model in loaded.items():
        runs[name] = partial(model.generate, batch, **options)
    timings = {name: [] for name in runs}
    with torch.no_grad():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(args.overhead_repeats):  # interleaved, so drift affects every configuration alike
            for name, fn in runs.items():
                start = time.perf_counter()
                out = fn()
                timings[name].append(time.perf_counter() - start)
                assert out.shape[1] == new_tokens
    result = {}
    base = min(timings["bare model"])
    for name, values in timings.items():
        best = min(values)
        result[name] = {
            "seconds": best,
            "ms_per_token": 1000 * best / (new_tokens * len(dev)),
            "ratio_to_bare": best / base,
        }
    return {"sources": len(dev), "new_tokens": new_tokens, "repeats": args.overhead_repeats, "runs": result}


# ---- report --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", help="a local model folder; default: pretrain the small decoder (cached in benchmarks/.cache)"
    )
    parser.add_argument("--train-size", type=int, default=2000, help="E2E training pairs")
    parser.add_argument(
        "--dev-size", type=int, default=100, help="E2E dev meaning representations (all their references)"
    )
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--prefix-lr", type=float, help="default: the prefix method's default")
    parser.add_argument("--soft-lr", type=float, help="default: the soft_prompt method's default")
    parser.add_argument("--finetune-lr", type=float, help="default: the full_finetune method's default")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--pretrain-steps", type=int, default=800)
    parser.add_argument("--pretrain-batch", type=int, default=32)
    parser.add_argument("--pretrain-lr", type=float, default=1e-3)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--overhead-tokens", type=int, default=48)
    parser.add_argument("--overhead-repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows (and generation timings) of the methods not run this time from the last results file",
    )
    parser.add_argument(
        "--pretrain-only",
        action="store_true",
        help="only build (or find) the pretrained decoder in benchmarks/.cache, which the E2E and WebNLG "
        "sweeps in benchmarks/sweeps use",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from prompttune.runtime import quiet_libraries

    quiet_libraries()
    pretraining = None
    if args.model:
        model_path = args.model
    else:
        folder = CACHE / (f"e2e-webnlg-gpt-l{args.layers}-w{args.width}-v{args.vocab_size}-s{args.pretrain_steps}")
        if not (folder / "pretraining.json").is_file():
            pretrain(folder, args)
        pretraining = json.loads((folder / "pretraining.json").read_text())
        model_path = str(folder)
        if args.pretrain_only:
            print(json.dumps({"model": model_path, **pretraining}), flush=True)
            return
    work = Path(tempfile.mkdtemp(prefix="prompttune-e2e-"))
    train_path, dev_path = write_subsets(work, args.train_size, args.dev_size, args.seed)
    rows = {}
    for method in args.methods.split(","):
        out = work / method
        try:
            if method in PEFT_ANCHORS:
                row = run_peft(method, args, model_path, train_path, dev_path, out)
            else:
                row = run_prompttune(method, args, model_path, train_path, dev_path, out)
            row["seconds_per_step"] = row["train_seconds"] / row["steps"]
        except Exception as error:  # reported in the table; the other methods still run
            row = {"error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
        rows[method] = row
        print(json.dumps({"method": method, **row}), flush=True)
    prompts = {m: work / m for m in ("prefix", "soft_prompt") if m in rows and "error" not in rows[m]}
    overhead = generation_overhead(args, model_path, dev_path, prompts) if prompts else None
    print(json.dumps(overhead), flush=True)
    previous = RESULTS / "e2e_generation.json"
    if args.merge and previous.is_file():
        earlier = json.loads(previous.read_text())
        rows = {
            m: rows[m] if m in rows else {**earlier["runs"][m], "earlier_run": True}
            for m in METHODS
            if m in rows or m in earlier["runs"]
        }
        if overhead is None and earlier.get("generation_overhead"):
            overhead = {**earlier["generation_overhead"], "earlier_run": True}
    markdown = render(args, model_path, pretraining, rows, overhead)
    print(markdown)
    if not args.no_write:
        write_results(
            "e2e_generation",
            {
                "args": vars(args),
                "environment": environment(),
                "pretraining": pretraining,
                "runs": rows,
                "generation_overhead": overhead,
            },
            markdown,
        )


def render(args, model_path, pretraining, rows, overhead) -> str:
    lines = ["# Table-to-text on E2E: prefix tuning, soft prompt, full fine-tuning, PEFT prefix and prompt tuning", ""]
    if pretraining:
        lines += [
            (
                f"Frozen model: a GPT-2-style decoder ({pretraining['config'].get('n_layer')} layers, width "
                f"{pretraining['config'].get('n_embd')}, {pretraining['parameters']:,} parameters, byte-level BPE of "
                f"{args.vocab_size} tokens) pretrained here as a plain language model on {pretraining['texts']:,} reference texts "
                f"of the E2E and WebNLG 2017 training sets ({pretraining['tokens']:,} tokens; {pretraining['steps']} steps of "
                f"{pretraining['batch']} x {pretraining['block']} tokens, {pretraining['seconds'] / 60:.1f} minutes on the CPU; "
                f"final training loss {pretraining['final_loss']:.2f})."
            ),
            "",
        ]
    else:
        lines += [f"Frozen model: `{model_path}`.", ""]
    lines += [
        (
            f"Training: {args.train_size} E2E training pairs (seed {args.seed}), {args.steps} steps of batch {args.batch_size}, "
            f"AdamW with linear decay; learning rates (each method's default unless given): prefix and PEFT prefix "
            f"{lr_for('prefix', args)}, soft prompt and PEFT prompt tuning {lr_for('soft_prompt', args)}, full fine-tuning "
            f"{lr_for('full_finetune', args)}. Scores: greedy decoding of the first {args.dev_size} E2E dev meaning "
            "representations against all their references (sacrebleu BLEU and chrF, rouge-score ROUGE-L F1)."
        ),
        "",
        "Command: `python -m benchmarks.e2e_generation`"
        + (
            f" (this run: `--methods {args.methods} --merge`; rows marked earlier come from the previous full run)"
            if args.merge
            else ""
        ),
        "",
        "| method | BLEU | chrF | ROUGE-L | trainable params | artifact bytes | s / step |",
        "|---|---|---|---|---|---|---|",
    ]
    for method, r in rows.items():
        if "error" in r:
            lines.append(f"| {method} | failed: {r['error']} | | | | | |")
            continue
        s = r["scores"]
        lines.append(
            f"| {method}{' (earlier run)' if r.get('earlier_run') else ''} | {s['bleu']:.2f} | {s['chrf']:.2f} | {s['rougeL']:.2f} | {r['trainable_parameters']:,} | "
            f"{r['artifact_bytes']:,} | {r['seconds_per_step']:.3f} |"
        )
    for peft_name, anchor in PEFT_ANCHORS.items():
        ours, peft = rows.get(anchor), rows.get(peft_name)
        if ours and peft and "error" not in ours and "error" not in peft:
            lines += [
                "",
                (
                    f"{anchor} vs {peft_name}: BLEU {ours['scores']['bleu']:.2f} vs {peft['scores']['bleu']:.2f}; "
                    f"seconds per step {ours['seconds_per_step']:.3f} vs {peft['seconds_per_step']:.3f} "
                    f"(ratio {ours['seconds_per_step'] / peft['seconds_per_step']:.2f})."
                ),
            ]
    padded = [(m, r) for m, r in rows.items() if "error" not in r and r.get("scores_padded_batches")]
    if padded:
        lines += [
            "",
            (
                "PEFT's rows are decoded one source at a time. Decoded in left-padded batches instead (PEFT's prompt "
                "tuning puts its virtual tokens before the padding and drops position ids):"
            ),
            "",
        ]
        for method, r in padded:
            b = r["scores_padded_batches"]
            lines.append(
                f"- {method}: BLEU {r['scores']['bleu']:.2f} one at a time, {b['bleu']:.2f} in batches of "
                f"{b['batch_size']}; {b['outputs_changed']} of {args.dev_size} outputs changed"
            )
    if overhead:
        lines += [
            "",
            (
                f"Generation cost: {overhead['sources']} sources, exactly {overhead['new_tokens']} new tokens each, "
                f"greedy, best of {overhead['repeats']} interleaved repeats, one process."
            ),
            "",
            "| prompt | seconds | ms per token | vs bare model |",
            "|---|---|---|---|",
        ]
        for name, r in overhead["runs"].items():
            lines.append(f"| {name} | {r['seconds']:.3f} | {r['ms_per_token']:.3f} | {r['ratio_to_bare']:.3f}x |")
    lines += ["", "Samples (first dev sources):"]
    for method, r in rows.items():
        if "error" not in r:
            lines.append(f"- {method}: " + " / ".join(f"“{t}”" for t in r["samples"]))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
