"""Runs one prompttune operation and kills this process with SIGKILL at a chosen moment, for the
fault-injection tests (tests/test_faults.py).

    python crash.py OPERATION ARGS_JSON [--kill-at N | --kill-on REGEX | --kill-at-step K]

`compare` runs a sweep (ARGS_JSON: {"argv": [...]}, the flags of `prompttune compare`) and with
`--kill-after-cells K` kills its whole process group (the sweep and its workers) as soon as the
sweep has been told that K cells finished.

`--kill-at N` kills just before the N-th change the operation makes to the file system (a rename,
replace, unlink, rmdir or rmtree); `--kill-on REGEX` just before the first change whose description
("rename SOURCE TARGET") matches; `--kill-at-step K` just before the K-th optimiser step. Without
them, the operation runs to the end and prints, one JSON line each, the changes it made.
"""

import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch

KILL_AT = None
KILL_ON = None
KILL_AT_STEP = None
EVENTS = []


def _die():
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _watch(module, name):
    original = getattr(module, name)

    def watched(*args, **kwargs):
        EVENTS.append([name] + [os.fspath(a) for a in args[:2] if isinstance(a, (str, os.PathLike))])
        if KILL_AT is not None and len(EVENTS) == KILL_AT:
            _die()
        if KILL_ON is not None and re.search(KILL_ON, " ".join(EVENTS[-1])):
            _die()
        return original(*args, **kwargs)

    setattr(module, name, watched)


def arm():
    """From here on, every change to the file system is counted (and the chosen one never happens)."""
    for name in ("rename", "replace", "unlink", "rmdir"):
        _watch(os, name)
    _watch(shutil, "rmtree")
    if KILL_AT_STEP is not None:
        steps = {"n": 0}
        original = torch.optim.AdamW.step

        def step(self, *args, **kwargs):
            steps["n"] += 1
            if steps["n"] == KILL_AT_STEP:
                _die()
            return original(self, *args, **kwargs)

        torch.optim.AdamW.step = step


def save(args):
    from prompttune import Backbone, ClassificationConfig, PromptModel, save_prompt

    torch.manual_seed(args["seed"])
    backbone = Backbone.from_pretrained(args["model"])
    config = ClassificationConfig(
        labels=("0", "1"), verbalizer=(("bad",), ("good",)), template="{text} it was {mask} ."
    )
    model = PromptModel.create(
        backbone, args.get("method", "soft_prompt"), config, args.get("options", {"num_virtual_tokens": 4})
    )
    arm()
    save_prompt(model, args["folder"])


def train(args):
    from prompttune.cli import main

    arm()
    code = main(args["argv"])
    if code:
        raise SystemExit(code)


def push(args):
    from prompttune.artifacts.registry import Registry

    registry = Registry(args["registry"])
    arm()
    registry.push(args["folder"], args["name"])


def pull(args):
    from prompttune.artifacts.registry import Registry

    registry = Registry(args["registry"])
    arm()
    registry.pull(args["spec"], args["destination"], force=args.get("force", False))


def export(args):
    from prompttune.artifacts.peft_format import export_peft

    arm()
    export_peft(args["prompt"], args["output"], force=args.get("force", False))


def compare(args):
    from prompttune.cli import build_parser
    from prompttune.sweeps.compare import run_sweep, spec_from_args

    parsed = build_parser().parse_args(["compare", *args["argv"]])
    finished = {"n": 0}

    def progress(line):
        print(line, file=sys.stderr, flush=True)
        if line.startswith("["):  # "[k/n] CELL: status ..."
            finished["n"] += 1
            if KILL_AFTER_CELLS is not None and finished["n"] == KILL_AFTER_CELLS:
                sys.stdout.flush()
                os.killpg(os.getpgid(0), signal.SIGKILL)

    run_sweep(spec_from_args(parsed), parsed.output, workers=parsed.workers, progress=progress)


KILL_AFTER_CELLS = None

if __name__ == "__main__":
    operation, payload = sys.argv[1], json.loads(sys.argv[2])
    rest = sys.argv[3:]
    if "--kill-at" in rest:
        KILL_AT = int(rest[rest.index("--kill-at") + 1])
    if "--kill-on" in rest:
        KILL_ON = rest[rest.index("--kill-on") + 1]
    if "--kill-at-step" in rest:
        KILL_AT_STEP = int(rest[rest.index("--kill-at-step") + 1])
    if "--kill-after-cells" in rest:
        KILL_AFTER_CELLS = int(rest[rest.index("--kill-after-cells") + 1])
    {"save": save, "train": train, "push": push, "pull": pull, "export": export, "compare": compare}[operation](payload)
    for event in EVENTS:
        print(json.dumps(event))
