"""`prompttune train | evaluate | predict | generate | compare | export | inspect | registry | serve | human-eval`: the
command line over prompttune.api, prompttune.sweeps.compare, prompttune.analysis.inspection,
prompttune.artifacts.registry, prompttune.serving.server and prompttune.human_eval."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .config import add_config_arguments, add_union_arguments, config_arguments, union_arguments
from .decoding import Decoding
from .errors import PromptTuneError
from .method_options import METHOD_CONFIGS
from .options import TASK_OPTION_CLASSES
from .runtime import is_main_process
from .serving.limits import Limits
from .sweeps.compare import OWN_TASK_FIELDS
from .training.config import TrainConfig


def _method_options(args) -> dict:
    options = union_arguments(args, METHOD_CONFIGS)
    for item in args.option or []:
        if "=" not in item:
            raise PromptTuneError(f"--option: expected KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _train_options(args) -> dict:
    return config_arguments(args, TrainConfig)


def _generation_options(args) -> dict:
    return config_arguments(args, Decoding)


def _task_flags(parser, title: str, only: tuple[str, ...] | None = None) -> None:
    """Flags for the fields of every task's options (or those in `only`), each naming the tasks
    that take it."""
    add_union_arguments(parser, TASK_OPTION_CLASSES, title, owner="task", only=only)


def _columns(parser, *roles: str) -> None:
    """The column flags of these roles, as `train` has them (the tasks' options)."""
    _task_flags(parser, "columns (default: those the prompt was trained with)", tuple(f"{r}_column" for r in roles))


def _prompt_or_ensemble(parser) -> None:
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--prompt", help="a saved prompt's folder")
    which.add_argument(
        "--prompts",
        help="an ensemble: comma-separated prompt folders for one task and base model, "
        "run together in one batched forward",
    )
    parser.add_argument(
        "--combine",
        default="mean",
        choices=("mean", "vote"),
        help="ensemble: mean probability, or majority vote (ties go to the higher mean probability)",
    )


def _model_flags(
    parser,
    required: bool = False,
    help_text: str = "local copy of the base model (checked against the artifact)",
    device: bool = True,
) -> None:
    """Where the frozen model comes from and how it is placed: the same flags on every command."""
    parser.add_argument("--model", required=required, help=help_text)
    parser.add_argument(
        "--gguf-file", help="with --model FOLDER: the GGUF file in it to load (dequantised once, cached)"
    )
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        help="load the frozen model in this type (prompts stay float32); default: as stored",
    )
    parser.add_argument(
        "--device-map",
        choices=("auto",),
        help="auto: spread the model over the GPUs there are, then the CPU (Accelerate's big-model loading)",
    )
    if device:
        parser.add_argument("--device", help="e.g. cpu or cuda (default: what Accelerate picks)")


def _decoding_flags(parser, sequences: bool = True) -> None:
    """The decoding options (Decoding's fields); `sequences`: with --num-return-sequences."""
    add_config_arguments(
        parser, Decoding, "decoding (Decoding's fields)", skip=() if sequences else ("num_return_sequences",)
    )


def _human_eval_parser(commands) -> None:
    from .human_eval.study import Design

    h = commands.add_parser("human-eval", help="human evaluation of prompts: make a study, serve it to raters, report")
    actions = h.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create",
        help="generate every system's outputs on a data sample once and draw each rater's items: a study folder",
    )
    create.add_argument("study", help="a new folder, or one without a study (a study is never overwritten)")
    create.add_argument(
        "--data", required=True, help="the sources (and references): CSV, TSV, JSONL or a datasets folder"
    )
    create.add_argument(
        "--system",
        action="append",
        required=True,
        metavar="NAME=SYSTEM",
        help="a system to judge (two or more): NAME=PROMPT_FOLDER (prompttune's or a PEFT adapter), "
        "NAME=registry:PROMPT@VERSION, NAME=@bare (the frozen model reading each source as the "
        "first prompt's task writes it, without the learned prompt), NAME=@reference (the data's "
        "first reference) or NAME=outputs:FILE (JSON lines as `prompttune generate` prints)",
    )
    create.add_argument(
        "--registry", help="for registry: systems (default: $PROMPTTUNE_REGISTRY or ~/.prompttune/registry)"
    )
    add_config_arguments(create, Design, "the study's design (Design's fields)")
    _columns(create, "source", "target")
    create.add_argument("--batch-size", type=int, default=16)
    _decoding_flags(create, sequences=False)
    _model_flags(create)
    status = actions.add_parser("status", help="each rater's link and progress")
    status.add_argument("study")
    status.add_argument("--host", default="127.0.0.1", help="the host the links name")
    status.add_argument("--port", type=int, default=8100)
    serve = actions.add_parser(
        "serve", help="the raters' web page: one item at a time, every judgement committed as it is given"
    )
    serve.add_argument("study")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8100)
    serve.add_argument(
        "--allow-names",
        action="store_true",
        help="raters may start by giving their name instead of their token (a trusted network)",
    )
    serve.add_argument(
        "--body-timeout", type=float, default=10.0, help="seconds a request's body may take to arrive; then 408"
    )
    serve.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    report = actions.add_parser(
        "report",
        help="win/tie/loss with bootstrap intervals, Bradley-Terry strengths, "
        "Likert means, agreement; JSON, CSV and an HTML page with plots",
    )
    report.add_argument("study")
    report.add_argument(
        "--out",
        help="folder for report.json, judgements.csv, outputs.jsonl, report.html and the plots (default: STUDY/report)",
    )
    report.add_argument("--level", type=float, default=0.95, help="confidence level of the intervals")
    report.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (Bradley-Terry: at most 200)")
    report.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    report.add_argument(
        "--attach", action="store_true", help="attach each registry system's result to its version in the registry"
    )


def _human_eval(args, api) -> int:
    from .human_eval.study import Design, Study, create_study, parse_systems

    if args.action == "create":
        design = Design.from_dict(config_arguments(args, Design))
        options = _generation_options(args)
        made = create_study(
            args.study,
            args.data,
            parse_systems(args.system, args.registry),
            design,
            source_column=args.source_column,
            target_column=args.target_column,
            model=_model_name(args),
            device=args.device,
            dtype=args.dtype,
            batch_size=args.batch_size,
            **options,
        )
        print(json.dumps(made, indent=2))
    elif args.action == "status":
        for rater in Study(args.study).raters():
            print(json.dumps({**rater, "link": f"http://{args.host}:{args.port}/rate/{rater['token']}"}))
    elif args.action == "serve":
        from .human_eval.app import serve_study

        serve_study(
            args.study,
            args.host,
            args.port,
            args.allow_names,
            args.log_level,
            announce=lambda line: print(line, file=sys.stderr, flush=True),
            body_timeout=args.body_timeout,
        )
    else:
        from .human_eval.report import analyse, attach, write_report

        if not 0.5 <= args.level < 1:
            raise PromptTuneError(f"--level {args.level}: a confidence level between 0.5 and 1")
        if args.resamples < 100:
            raise PromptTuneError(f"--resamples {args.resamples}: at least 100 for percentile intervals")
        study = Study(args.study)
        result = analyse(study, args.level, args.resamples, args.seed)
        written = write_report(study, args.out or os.path.join(args.study, "report"), result)
        summary = {"judgements": result["study"]["judgements"], "files": written}
        if args.attach:
            summary["attached"] = attach(study, result)
        print(json.dumps(summary, indent=2))
    return 0


def _model_name(args) -> str | None:
    from .core.weights import model_name

    return model_name(args.model, args.gguf_file)


def _prompt_list(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def _train_parser(commands) -> None:
    t = commands.add_parser("train", help="train a prompt and save it as an artifact")
    _model_flags(
        t,
        required=True,
        help_text="hub id, local folder or .gguf file (all-MiniLM-L6-v2 and "
        "smollm2-135m-instruct resolve to their verified offline copies)",
    )
    t.add_argument(
        "--method",
        required=True,
        help="soft_prompt | prefix | deep_prompt | p_tuning | hard_prompt | autoprompt | pez | linear_probe | "
        "full_finetune",
    )
    t.add_argument(
        "--task",
        default=TASK_OPTION_CLASSES[0].task,
        help=f"a registered task: {', '.join(cls.task for cls in TASK_OPTION_CLASSES)} (default "
        f"{TASK_OPTION_CLASSES[0].task})",
    )
    t.add_argument("--train", required=True, help="CSV, TSV, JSONL, a datasets folder, or NAME[:CONFIG]:SPLIT")
    t.add_argument("--eval", help="dev data in the same form, for evaluation, early stopping and the best prompt")
    t.add_argument("--output", required=True, help="folder for the artifact, metrics.json and log.jsonl")
    t.add_argument("--init-from", help="start from a saved prompt of the same method (continues its training)")
    _task_flags(t, "task and data (the fields of the task's options: ClassificationOptions, GenerationOptions...)")
    add_union_arguments(
        t, METHOD_CONFIGS, "the method's settings (the fields of its config: SoftPromptConfig...)", "method"
    )
    t.add_argument(
        "--option",
        action="append",
        metavar="KEY=VALUE",
        help="a method config field, its value as JSON where it parses",
    )
    add_config_arguments(t, TrainConfig, "training (TrainConfig's fields)")
    t.add_argument("--resume", action="store_true", help="continue the run interrupted in --output")
    t.add_argument(
        "--restart",
        action="store_true",
        help="discard the run interrupted in --output (its checkpoint) and start again",
    )
    t.add_argument(
        "--force",
        action="store_true",
        help="--output already holds a prompt or a run's records: replace them when training ends",
    )


def _evaluate_parser(commands) -> None:
    e = commands.add_parser("evaluate", help="print a saved prompt's metrics on labelled data as JSON")
    _prompt_or_ensemble(e)
    e.add_argument("--data", required=True)
    _columns(e, "text", "text_pair", "label", "source", "target")
    e.add_argument(
        "--group-column",
        help="also report every metric per value of this column, with each group's count "
        "and the largest gap between groups",
    )
    e.add_argument("--batch-size", type=int, default=64)
    _model_flags(e)


def _predict_parser(commands) -> None:
    p = commands.add_parser("predict", help="print JSON lines with each input's label and probabilities")
    _prompt_or_ensemble(p)
    p.add_argument("--data")
    p.add_argument("texts", nargs="*")
    _columns(p, "text", "text_pair")
    p.add_argument("--batch-size", type=int, default=64)
    _model_flags(p)


def _generate_parser(commands) -> None:
    g = commands.add_parser("generate", help="print JSON lines with each source and its generated text")
    g.add_argument("--prompt", required=True)
    g.add_argument("--data", help="file with a source column (default: the one the prompt was trained with)")
    g.add_argument("texts", nargs="*")
    _columns(g, "source")
    g.add_argument("--batch-size", type=int, default=32)
    _decoding_flags(g)
    g.add_argument("--seed", type=int, help="seed for sampling")
    _model_flags(g)


def _compare_parser(commands) -> None:
    c = commands.add_parser(
        "compare", help="sweep methods x lengths x inits x training sizes x seeds; table, plots, report"
    )
    c.add_argument(
        "--spec",
        help="a YAML sweep (fields: model, train, eval, methods, lengths, inits, train_sizes, seeds, "
        "train_options, ...); flags override it",
    )
    c.add_argument("--output", required=True, help="sweep folder: cells, results.csv, summary.md, plots, report.html")
    c.add_argument("--workers", type=int, default=1, help="cells run at the same time, each in its own process")
    c.add_argument(
        "--ray",
        metavar="ADDRESS",
        help="run the cells as tasks on a Ray cluster (local: start one here); its workers must see --output",
    )
    _model_flags(c, device=False)
    c.add_argument("--train")
    c.add_argument("--eval")
    c.add_argument("--task", help="a registered task (default: classification)")
    c.add_argument("--methods", help="comma-separated methods")
    c.add_argument("--lengths", help="comma-separated prompt lengths (for methods that have one)")
    c.add_argument("--inits", help="comma-separated initialisations (for methods that accept them)")
    c.add_argument("--train-sizes", help="comma-separated examples per class (generation: in all), or full")
    c.add_argument("--seeds", help="comma-separated seeds")
    c.add_argument("--max-steps", type=int)
    c.add_argument("--batch-size", type=int)
    c.add_argument(
        "--report-to",
        help="experiment trackers for every cell (TrainConfig's report_to), each cell a run named after it",
    )
    c.add_argument("--eval-size", type=int, help="score on a fixed random subset of the eval data")
    c.add_argument("--metric", help="the metric plotted and used to keep each cell's best prompt")
    c.add_argument(
        "--group-column",
        help="also score every cell per value of this eval column (GROUP:METRIC "
        "columns, gap:METRIC, and a plot per group)",
    )
    _task_flags(
        c,
        "task and data (the task options' fields; others go in the spec's prompt_options)",
        only=OWN_TASK_FIELDS,
    )


def _export_parser(commands) -> None:
    x = commands.add_parser(
        "export",
        help="write a prompt in another format: --format peft (a PEFT prompt-learning "
        "adapter folder); prints what the format leaves out",
    )
    x.add_argument("directory", help="the prompt's folder")
    x.add_argument("output", help="a new or empty folder for the adapter")
    x.add_argument("--format", required=True, choices=("peft",))
    x.add_argument(
        "--force",
        action="store_true",
        help="into a folder that holds other files: replace only the adapter's files there",
    )
    _model_flags(x)


def _inspect_parser(commands) -> None:
    i = commands.add_parser("inspect", help="what a learned prompt is near: vocabulary neighbours, norms, label words")
    i.add_argument("directory")
    i.add_argument("--json", action="store_true", help="print the full report as JSON")
    i.add_argument("--png", help="also draw a heatmap into this file")
    i.add_argument("--top", type=int, default=5, help="nearest tokens per virtual token or prefix position")
    _model_flags(i, device=False)


def _serve_parser(commands) -> None:
    v = commands.add_parser("serve", help="serve every prompt in a registry over one frozen model (HTTP JSON API)")
    _model_flags(v, required=True, help_text="the base model the registry's prompts were made for", device=False)
    v.add_argument("--registry", help="registry folder (default: $PROMPTTUNE_REGISTRY or ~/.prompttune/registry)")
    v.add_argument("--host", default="127.0.0.1")
    v.add_argument("--port", type=int, default=8000)
    v.add_argument(
        "--token",
        default=os.environ.get("PROMPTTUNE_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' (default: $PROMPTTUNE_TOKEN; none: open)",
    )
    add_config_arguments(v, Limits, "limits (Limits' fields)", skip=("continuous",))
    v.add_argument(
        "--batching",
        choices=("continuous", "static"),
        default="continuous",
        help="OpenAI requests on a decoder-only model: join the decoding batch at its next step "
        "(continuous), or wait for it and decode in batches from start to end (static)",
    )
    v.add_argument("--device", help="e.g. cpu or cuda")
    v.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))


def _registry_parser(commands) -> None:
    r = commands.add_parser("registry", help="versioned prompt registry: push, list, show, pull, alias, delete")
    r.add_argument("--registry", help="registry folder (default: $PROMPTTUNE_REGISTRY or ~/.prompttune/registry)")
    actions = r.add_subparsers(dest="action", required=True)
    push = actions.add_parser("push", help="store a prompt folder as the next version of NAME")
    push.add_argument("directory")
    push.add_argument("--name", required=True)
    push.add_argument("--alias", action="append", default=[], help="also point NAME@ALIAS at the new version")
    push.add_argument(
        "--model",
        help="a PEFT adapter's base model, where its config's base_model_name_or_path "
        "is not at hand (a prompttune prompt names its own)",
    )
    listing = actions.add_parser("list", help="every prompt, or every version of NAME")
    listing.add_argument("name", nargs="?")
    show = actions.add_parser("show", help="everything recorded about NAME[@VERSION|@ALIAS]")
    show.add_argument("spec")
    pull = actions.add_parser("pull", help="write NAME[@VERSION|@ALIAS]'s files into a new or empty folder")
    pull.add_argument("spec")
    pull.add_argument("destination")
    pull.add_argument(
        "--force",
        action="store_true",
        help="into a folder that holds other files: replace only the artifact's files there, keep the rest",
    )
    alias = actions.add_parser("alias", help="point NAME@ALIAS at the version SPEC names")
    alias.add_argument("spec")
    alias.add_argument("alias")
    unalias = actions.add_parser("unalias", help="remove the alias NAME@ALIAS")
    unalias.add_argument("spec")
    delete = actions.add_parser("delete", help="delete NAME@VERSION (or every version of NAME with --all)")
    delete.add_argument("spec")
    delete.add_argument("--all", action="store_true", help="every version of the name")
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="prompttune", description="Train prompts for frozen language models.")
    parser.add_argument("--version", action="version", version=f"prompttune {__import__('prompttune').__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    for add_parser, _ in COMMANDS.values():
        add_parser(commands)
    return parser


def _registry(args, api) -> int:
    from .artifacts.registry import Registry

    registry = Registry(args.registry)
    if args.action == "push":
        record = registry.push(args.directory, args.name, tuple(args.alias), model=args.model)
        print(json.dumps({k: record[k] for k in ("name", "version", "digest", "parent", "aliases")}))
    elif args.action == "list":
        for row in registry.list(args.name):
            print(
                json.dumps(
                    row
                    if args.name is None
                    else {k: row[k] for k in ("name", "version", "pushed", "method", "task", "metrics", "aliases")}
                )
            )
    elif args.action == "show":
        print(json.dumps(registry.show(args.spec), indent=2))
    elif args.action == "pull":
        print(registry.pull(args.spec, args.destination, force=args.force))
        kept = registry.kept_records(args.destination) if args.force else []
        if kept:
            print(
                f"kept {', '.join(kept)} in {args.destination}: they describe the prompt that was there before, "
                f"not {args.spec}",
                file=sys.stderr,
            )
    elif args.action == "alias":
        print(json.dumps(registry.set_alias(args.spec, args.alias)))
    elif args.action == "unalias":
        registry.remove_alias(args.spec)
    else:
        targets = (
            [f"{r['name']}@{r['version']}" for r in registry.list(args.spec)]
            if args.all
            else ["{name}@{version}".format(**registry.show(args.spec))]
        )
        if not args.yes:
            if not sys.stdin.isatty():
                raise PromptTuneError(
                    f"registry delete: would delete {', '.join(targets)}; pass --yes to confirm when not at a terminal"
                )
            answer = input(f"Delete {', '.join(targets)} from {registry.root}? Type the name to confirm: ")
            if answer.strip() != targets[0].split("@")[0]:
                raise PromptTuneError("registry delete: not confirmed; nothing was deleted")
        for record in registry.delete(args.spec, all_versions=args.all):
            print(json.dumps({"deleted": f"{record['name']}@{record['version']}", "aliases": record["aliases"]}))
    return 0


def _train(args, api) -> int:
    metrics = api.train_prompt(
        model=_model_name(args),
        method=args.method,
        task=args.task,
        train=args.train,
        eval=args.eval,
        output=args.output,
        init_from=args.init_from,
        method_options=_method_options(args),
        resume=args.resume,
        restart=args.restart,
        force=args.force,
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        **union_arguments(args, TASK_OPTION_CLASSES),
        **_train_options(args),
    )
    summary = {k: metrics[k] for k in ("method", "parameters", "artifact_bytes")}
    if metrics["dev_metrics"]:
        from .tasks import task_class

        dev = metrics["dev_metrics"]
        summary["dev"] = {k: dev[k] for k in task_class(args.task).metrics if k in dev}
    if is_main_process():
        print(json.dumps(summary))
    return 0


def _compare(args, api) -> int:
    from .sweeps.compare import run_sweep, spec_from_args

    rows = run_sweep(
        spec_from_args(args),
        args.output,
        workers=args.workers,
        ray_address=args.ray,
        progress=lambda line: print(line, file=sys.stderr, flush=True),
    )
    failed = [r for r in rows if r.get("status") != "done"]
    summary = {
        "cells": len(rows),
        "failed": len(failed),
        "summary": os.path.join(args.output, "summary.md"),
        "report": os.path.join(args.output, "report.html"),
    }
    print(json.dumps(summary))
    return 1 if failed else 0


def _export(args, api) -> int:
    from .artifacts.peft_format import export_peft

    backbone = None
    if args.model or args.gguf_file or args.dtype or args.device_map or args.device:
        backbone = api.load_backbone(
            _model_name(args) or api.prompt_meta(args.directory)["base_model"]["name_or_path"],
            device=args.device,
            dtype=args.dtype,
            device_map=args.device_map,
        )
    print(json.dumps(export_peft(args.directory, args.output, backbone=backbone, force=args.force)))
    return 0


def _inspect(args, api) -> int:
    from .analysis.inspection import inspect_command

    report = inspect_command(
        args.directory, args.json, args.png, args.top, _model_name(args), dtype=args.dtype, device_map=args.device_map
    )
    print(report)
    return 0


def _serve(args, api) -> int:
    from .serving.server import serve

    limits = Limits.from_dict({**config_arguments(args, Limits), "continuous": args.batching == "continuous"})
    serve(
        _model_name(args),
        args.registry,
        args.host,
        args.port,
        args.token,
        limits,
        args.device,
        args.log_level,
        dtype=args.dtype,
        device_map=args.device_map,
    )
    return 0


def _placement(args) -> dict:
    """Where the frozen model comes from and how it is placed, as the API's keywords."""
    return {"model": _model_name(args), "device": args.device, "dtype": args.dtype, "device_map": args.device_map}


def _evaluate(args, api) -> int:
    if args.prompts:
        if args.group_column:
            raise PromptTuneError("--group-column: scores one prompt (--prompt), not an ensemble")
        metrics = api.evaluate_ensemble(
            _prompt_list(args.prompts),
            args.data,
            args.combine,
            args.text_column,
            args.text_pair_column,
            args.label_column,
            args.batch_size,
            **_placement(args),
        )
    else:
        metrics = api.evaluate_prompt(
            args.prompt,
            args.data,
            args.text_column,
            args.text_pair_column,
            args.label_column,
            args.batch_size,
            source_column=args.source_column,
            target_column=args.target_column,
            group_column=args.group_column,
            **_placement(args),
        )
    print(json.dumps(metrics, indent=2))
    return 0


def _print_rows(rows) -> int:
    for row in rows:
        print(json.dumps(row, ensure_ascii=False))
    return 0


def _generate(args, api) -> int:
    if bool(args.texts) == bool(args.data):
        raise PromptTuneError("generate: give either --data FILE or texts, not both")
    rows = api.generate(
        args.prompt,
        texts=args.texts or None,
        data=args.data,
        source_column=args.source_column,
        batch_size=args.batch_size,
        seed=args.seed,
        **_placement(args),
        **_generation_options(args),
    )
    return _print_rows(rows)


def _predict(args, api) -> int:
    if bool(args.texts) == bool(args.data):
        raise PromptTuneError("predict: give either --data FILE or texts, not both")
    inputs = {
        "texts": args.texts or None,
        "data": args.data,
        "text_column": args.text_column,
        "text_pair_column": args.text_pair_column,
        "batch_size": args.batch_size,
        **_placement(args),
    }
    if args.prompts:
        return _print_rows(api.predict_ensemble(_prompt_list(args.prompts), combine=args.combine, **inputs))
    return _print_rows(api.predict(args.prompt, **inputs))


# Each command: the function that adds its parser, and the one that runs it (given the parsed
# arguments and prompttune.api); it returns the exit status.
COMMANDS = {
    "train": (_train_parser, _train),
    "evaluate": (_evaluate_parser, _evaluate),
    "predict": (_predict_parser, _predict),
    "generate": (_generate_parser, _generate),
    "compare": (_compare_parser, _compare),
    "export": (_export_parser, _export),
    "inspect": (_inspect_parser, _inspect),
    "serve": (_serve_parser, _serve),
    "human-eval": (_human_eval_parser, _human_eval),
    "registry": (_registry_parser, _registry),
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .runtime import quiet_libraries

    quiet_libraries()
    from . import api

    try:
        return COMMANDS[args.command][1](args, api)
    except PromptTuneError as error:
        print(f"prompttune: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
