"""Fault injection: processes killed with SIGKILL in the middle of saving, training, pushing and
pulling (tests/crash.py picks the moment), tampered artifacts and checkpoints, and checkouts from
several processes at once. Whatever happens, nothing a user had is gone, a run resumes to the same
prompt as an uninterrupted one, and every problem is one line that says what and where."""

import json
import shutil
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from conftest import SENTENCES, task_config
from safetensors.torch import load_file, save_file

from prompttune import Backbone, PromptModel, load_prompt, save_prompt
from prompttune.artifacts.registry import Registry
from prompttune.cli import main
from prompttune.storage import PRIVATE, sha256_file

CRASH = Path(__file__).parent / "crash.py"


def crash(operation: str, payload: dict, *flags) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(CRASH), operation, json.dumps(payload), *map(str, flags)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_killed(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == -signal.SIGKILL, f"not killed (exit {result.returncode}):\n{result.stderr[-3000:]}"


def snapshot(folder: Path) -> dict:
    """Every file outside prompttune's own folder, by relative path (prompt.json without the time
    it was made)."""
    files = {}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_file() and relative.parts[0] != PRIVATE:
            data = path.read_bytes()
            if path.name == "prompt.json":
                meta = json.loads(data)
                meta.pop("created", None)
                data = json.dumps(meta, sort_keys=True).encode()
            files[str(relative)] = data
    return files


def user_files(folder: Path) -> None:
    """What a user keeps in a folder they point prompttune at."""
    (folder / "checkpoint").mkdir(parents=True)
    (folder / "checkpoint" / "weights.bin").write_bytes(b"the user's own checkpoint")
    (folder / "notes.txt").write_text("my notes")


def assert_user_files(folder: Path) -> None:
    assert (folder / "checkpoint" / "weights.bin").read_bytes() == b"the user's own checkpoint"
    assert (folder / "notes.txt").read_text() == "my notes"


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    return path


def test_a_save_killed_at_any_moment_leaves_the_old_artifact_or_the_new_one(model_dirs, tmp_path):
    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    folder = tmp_path / "art"
    torch.manual_seed(1)
    save_prompt(PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 4}), folder)
    for name in ("metrics.json", "train_args.json", "log.jsonl"):  # the old artifact's run records
        (folder / name).write_text("{}\n")
    user_files(folder)
    old = snapshot(folder)
    # The new artifact has files the old one lacks (a prefix MLP's training state) and none of its run records.
    payload = {
        "model": str(model_dirs["bert"]),
        "seed": 2,
        "method": "prefix",
        "options": {"num_virtual_tokens": 2, "hidden_size": 8},
    }
    dry = tmp_path / "dry"
    shutil.copytree(folder, dry)
    result = crash("save", {**payload, "folder": str(dry)})
    assert result.returncode == 0, result.stderr
    changes = [json.loads(line) for line in result.stdout.splitlines()]
    new = snapshot(dry)
    assert new != old and "training_state.safetensors" in new and "metrics.json" not in new
    assert len(changes) >= 8

    def trial(n):
        target = tmp_path / f"kill{n}"
        shutil.copytree(folder, target)
        return n, target, crash("save", {**payload, "folder": str(target)}, "--kill-at", n)

    with ThreadPoolExecutor(2) as pool:  # two processes at a time, one per core
        trials = list(pool.map(trial, range(1, len(changes) + 1)))
    outcomes = []
    for n, target, result in trials:
        assert_killed(result)
        load_prompt(target, backbone=backbone)  # finishes a save that had committed
        state = snapshot(target)
        assert state in (old, new), f"killed before change {n} ({changes[n - 1]}): a mix of two artifacts"
        assert_user_files(target)
        assert not (target / PRIVATE).exists()
        outcomes.append("new" if state == new else "old")
    # Killed before the commit the old artifact stays; after it, the new one is finished.
    assert outcomes == ["old"] + ["new"] * (len(changes) - 1)


def train_argv(model_dirs, data, output, *extra):
    return [
        "train",
        "--model",
        str(model_dirs["bert"]),
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
        "{text} it was {mask} .",
        "--verbalizer",
        "0:bad,1:good",
        "--max-steps",
        "8",
        "--batch-size",
        "2",
        "--eval-every",
        "4",
        "--checkpoint-every",
        "2",
        "--seed",
        "3",
        "--output",
        str(output),
        "--no-progress",
        *extra,
    ]


@pytest.mark.parametrize(
    "kill",
    [
        ("--kill-at-step", 5),  # between checkpoints: resumes from step 4
        (
            "--kill-on",
            r"^rename \S*/\.checkpoint-\S* \S*/checkpoint-00000004$",
        ),  # writing the step-4 checkpoint: from step 2
        (
            "--kill-on",
            r"^replace \S*/\.prompttune/commit/",
        ),  # installing the finished artifact: the next reader finishes it
    ],
    ids=["mid-training", "during-a-checkpoint", "during-the-final-save"],
)
def test_training_killed_resumes_to_the_uninterrupted_result(model_dirs, data, tmp_path, capsys, kill):
    reference = tmp_path / "reference"
    assert main(train_argv(model_dirs, data, reference)) == 0
    folder = tmp_path / "run"
    user_files(folder)
    assert main(train_argv(model_dirs, data, folder, "--max-steps", "2")) == 0  # an earlier artifact
    before = snapshot(folder)
    capsys.readouterr()

    assert_killed(crash("train", {"argv": train_argv(model_dirs, data, folder, "--restart", "--force")}, *kill))
    assert_user_files(folder)
    if kill[0] != "--kill-on" or "commit" not in kill[1]:
        assert snapshot(folder) == before, "the earlier artifact changed before the new run had finished"
        assert main(train_argv(model_dirs, data, folder, "--resume")) == 0, capsys.readouterr().err
    resumed, expected = load_prompt(folder), load_prompt(reference)
    for name, tensor in expected.trainable_state().items():
        assert torch.equal(resumed.trainable_state()[name], tensor), name
    metrics, wanted = (json.loads((f / "metrics.json").read_text()) for f in (folder, reference))
    assert metrics["dev_metrics"] == wanted["dev_metrics"] and metrics["training"]["steps"] == 8

    def log(f):
        return [
            {k: v for k, v in json.loads(line).items() if k != "time"}
            for line in (f / "log.jsonl").read_text().splitlines()
        ]

    assert [e["step"] for e in log(folder)] == [e["step"] for e in log(reference)]
    assert [e["loss"] for e in log(folder) if "loss" in e] == pytest.approx(
        [e["loss"] for e in log(reference) if "loss" in e], rel=1e-6
    )
    assert not (folder / PRIVATE).exists()
    assert_user_files(folder)


def test_a_push_killed_midway_stores_nothing_and_the_next_push_cleans_up(model_dirs, data, tmp_path):
    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    registry = Registry(tmp_path / "reg")
    first = save_prompt(
        PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 4}), tmp_path / "a"
    )
    registry.push(first, "x")
    torch.manual_seed(5)
    second = save_prompt(
        PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 4}), tmp_path / "b"
    )
    source = snapshot(second)
    # Killed as the first file's bytes are moved into the store.
    result = crash(
        "push",
        {"registry": str(registry.root), "folder": str(second), "name": "x"},
        "--kill-on",
        r"^replace \S*/\.incoming-",
    )
    assert_killed(result)
    assert [v["version"] for v in registry.list("x")] == [1]
    assert snapshot(second) == source
    assert list((registry.root / "blobs").rglob(".incoming-*")), "the kill should leave a half-written file"
    assert registry.push(second, "x")["version"] == 2
    assert not list((registry.root / "blobs").rglob(".incoming-*"))
    load_prompt(registry.checkout("x@1"), backbone=backbone)
    load_prompt(registry.checkout("x@2"), backbone=backbone)


def test_a_pull_killed_midway_changes_nothing_a_user_had(model_dirs, tmp_path):
    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    registry = Registry(tmp_path / "reg")
    record = registry.push(
        save_prompt(
            PromptModel.create(backbone, "prefix", task_config(), {"num_virtual_tokens": 2, "hidden_size": 8}),
            tmp_path / "a",
        ),
        "x",
    )
    # Into a new folder: killed at the final rename, the folder does not exist; the next pull makes it.
    fresh = tmp_path / "pulled"
    assert_killed(
        crash(
            "pull",
            {"registry": str(registry.root), "spec": "x", "destination": str(fresh)},
            "--kill-on",
            r"^rename \S*/\.pulled\.pull-",
        )
    )
    assert not fresh.exists()
    registry.pull("x", fresh)
    assert {p.name for p in tmp_path.iterdir() if p.name.startswith(".pulled")} == set()
    assert {name: sha256_file(fresh / name) for name in record["files"]} == record["files"]
    # With --force into a user's folder holding an older artifact: killed while the files are put in
    # place, the user's files are kept and the next reader finishes the pull.
    mine = tmp_path / "mine"
    save_prompt(PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 3}), mine)
    user_files(mine)
    assert_killed(
        crash(
            "pull",
            {"registry": str(registry.root), "spec": "x", "destination": str(mine), "force": True},
            "--kill-on",
            r"^replace \S*/\.prompttune/commit/",
        )
    )
    assert_user_files(mine)
    load_prompt(mine, backbone=backbone)
    assert {name: sha256_file(mine / name) for name in record["files"]} == record["files"]
    assert not (mine / PRIVATE).exists()


def test_an_export_killed_at_any_moment_leaves_one_whole_adapter(model_dirs, tmp_path):
    """Two prompts of one shape (other weights, and configs that name other base models): an export
    of the second over the first, killed before each of its changes to the file system in turn, leaves the first adapter
    or the second, never the config of one beside the weights of the other; a folder with a user's
    files keeps them."""
    from prompttune.artifacts.peft_format import PEFT_CONFIG, PEFT_WEIGHTS, export_peft, read_peft_config

    # The same model in two folders: adapters of one shape whose configs name different base models.
    shutil.copytree(model_dirs["gpt2"], tmp_path / "gpt2-copy")
    prompts = {}
    for name, folder in (("a", model_dirs["gpt2"]), ("b", tmp_path / "gpt2-copy")):
        backbone = Backbone.from_pretrained(str(folder))
        torch.manual_seed(len(prompts))
        model = PromptModel.create(
            backbone, "soft_prompt", task_config(template="{text} so {mask}"), {"num_virtual_tokens": 3}
        )
        prompts[name] = save_prompt(model, tmp_path / name)
        export_peft(prompts[name], tmp_path / f"{name}-adapter", backbone=backbone)
    whole = {
        name: {f: (tmp_path / f"{name}-adapter" / f).read_bytes() for f in (PEFT_CONFIG, PEFT_WEIGHTS)}
        for name in prompts
    }
    assert whole["a"][PEFT_CONFIG] != whole["b"][PEFT_CONFIG] and whole["a"][PEFT_WEIGHTS] != whole["b"][PEFT_WEIGHTS]
    backbone = Backbone.from_pretrained(str(model_dirs["gpt2"]))
    for with_user_files in (False, True):
        for kill_at in range(1, 40):
            out = tmp_path / f"out-{with_user_files}-{kill_at}"
            export_peft(prompts["a"], out, backbone=backbone)
            if with_user_files:
                (out / "notes.txt").write_text("my notes")
            result = crash(
                "export", {"prompt": str(prompts["b"]), "output": str(out), "force": True}, "--kill-at", kill_at
            )
            if with_user_files:
                read_peft_config(out)  # what prompttune reads of it, once a kill is recovered from
                assert (out / "notes.txt").read_text() == "my notes"
            found = {f: (out / f).read_bytes() for f in (PEFT_CONFIG, PEFT_WEIGHTS)}
            assert found in (whole["a"], whole["b"]), f"killed at change {kill_at}: a mixed adapter"
            assert (
                not [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.export-")]
                or result.returncode != 0
            )  # a finished export leaves no staging folder
            if result.returncode == 0:  # the export ran to its end before the kill point came
                assert found == whole["b"]
                break
            assert_killed(result)
        else:
            pytest.fail("the export never finished")


# ---- tampered files: one line each, nothing loaded ----------------------------------------------


def _tamper_cases():
    def meta_change(change):
        def apply(folder):
            meta = json.loads((folder / "prompt.json").read_text())
            change(meta)
            (folder / "prompt.json").write_text(json.dumps(meta))

        return apply

    def tensors(make):
        def apply(folder):
            state = load_file(str(folder / "prompt.safetensors"))
            save_file({k: make(v) for k, v in state.items()}, str(folder / "prompt.safetensors"))
            meta = json.loads((folder / "prompt.json").read_text())
            meta["files"]["prompt.safetensors"] = sha256_file(folder / "prompt.safetensors")
            (folder / "prompt.json").write_text(json.dumps(meta))

        return apply

    def truncate(folder):
        data = (folder / "prompt.safetensors").read_bytes()
        (folder / "prompt.safetensors").write_bytes(data[: len(data) // 2])

    def flip(folder):
        data = bytearray((folder / "prompt.safetensors").read_bytes())
        data[-3] ^= 0x01
        (folder / "prompt.safetensors").write_bytes(bytes(data))

    def no_digest_truncate(folder):
        meta_change(lambda m: m.pop("files"))(folder)
        truncate(folder)

    return {
        "truncated tensors": (truncate, "prompt.safetensors: does not match the sha256 prompt.json records"),
        "a flipped byte": (flip, "prompt.safetensors: does not match the sha256 prompt.json records"),
        "truncated, no sha256 recorded": (no_digest_truncate, "prompt.safetensors: cannot read tensors"),
        "base_model not an object": (
            meta_change(lambda m: m.update(base_model="gpt2")),
            "field 'base_model' must be an object describing the base model, got 'gpt2'",
        ),
        "tensors null": (
            meta_change(lambda m: m.update(tensors=None)),
            "field 'tensors' must map tensor names to shapes",
        ),
        "unknown method": (meta_change(lambda m: m.update(method="magic")), "unknown method 'magic'"),
        "NaN values": (tensors(lambda v: torch.full_like(v, float("nan"))), "holds 128 NaN or Inf values"),
        "integer tensor": (
            tensors(lambda v: v.long()),
            "tensor 'method.prompt' is int64; a prompt's tensors are floating point",
        ),
        "not JSON": (lambda f: (f / "prompt.json").write_text("{"), "prompt.json: not valid JSON"),
    }


@pytest.mark.parametrize("case", sorted(_tamper_cases()))
def test_a_tampered_artifact_is_refused_in_one_line(model_dirs, tmp_path, capsys, case):
    damage, message = _tamper_cases()[case]
    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    folder = save_prompt(
        PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 4}), tmp_path / "p"
    )
    damage(folder)
    for argv in (
        ["predict", "--prompt", folder, "--model", model_dirs["bert"], "a great film"],
        ["registry", "--registry", tmp_path / "reg", "push", folder, "--name", "x"],
    ):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, (argv[0], err)
    assert Registry(tmp_path / "reg").list() == []


def test_prompts_with_nan_values_are_not_saved(model_dirs, tmp_path):
    from prompttune import ArtifactError

    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    model = PromptModel.create(backbone, "soft_prompt", task_config(), {"num_virtual_tokens": 4})
    save_prompt(model, tmp_path / "p")
    before = snapshot(tmp_path / "p")
    with torch.no_grad():
        model.method.prompt[0, 0] = float("inf")
    with pytest.raises(ArtifactError, match=r"tensor 'method.prompt' holds 1 NaN or Inf values \(training diverged"):
        save_prompt(model, tmp_path / "p")
    assert snapshot(tmp_path / "p") == before


@pytest.mark.parametrize(
    "case",
    [
        "truncated state",
        "a flipped byte in the best prompt",
        "pointer not JSON",
        "train_args not JSON",
        "pointer names another folder",
    ],
)
def test_a_tampered_checkpoint_is_refused_in_one_line(model_dirs, data, tmp_path, capsys, case):
    folder = tmp_path / "run"
    assert_killed(crash("train", {"argv": train_argv(model_dirs, data, folder)}, "--kill-at-step", 6))
    run = folder / PRIVATE / "run"
    pointer = json.loads((run / "checkpoint.json").read_text())
    state = run / pointer["folder"] / "state.safetensors"
    if case == "truncated state":
        state.write_bytes(state.read_bytes()[:100])
    elif case == "a flipped byte in the best prompt":
        tensors = load_file(str(state))
        best = next(k for k in tensors if k.startswith("state.best."))
        tensors[best] = tensors[best] + 1e-3  # another prompt, in a well-formed file
        save_file(tensors, str(state))
    elif case == "pointer not JSON":
        (run / "checkpoint.json").write_text("{]")
    elif case == "train_args not JSON":
        (run / "train_args.json").write_text("\x00\x01")
    else:
        (run / "checkpoint.json").write_text(json.dumps({**pointer, "folder": "../../elsewhere"}))
    capsys.readouterr()
    code = main(train_argv(model_dirs, data, folder, "--resume"))
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    expected = {
        "truncated state": "state.safetensors: does not match its sha256 in checkpoint.json",
        "a flipped byte in the best prompt": "state.safetensors: does not match its sha256 in checkpoint.json",
        "pointer not JSON": "checkpoint.json: not valid JSON",
        "train_args not JSON": "train_args.json cannot be read",
        "pointer names another folder": "checkpoint.json: not a prompttune checkpoint pointer",
    }[case]
    assert expected in err
    assert not (folder / "prompt.json").exists()
    # Starting again discards the damaged checkpoint and trains from the beginning.
    assert main(train_argv(model_dirs, data, folder, "--restart")) == 0
    assert json.loads((folder / "metrics.json").read_text())["training"]["steps"] == 8


CHECKOUTS = """
import sys
from pathlib import Path
from prompttune.artifacts.registry import Registry
from prompttune.storage import sha256_file
registry = Registry(sys.argv[1])
for spec in sys.argv[2:]:
    folder = registry.checkout(spec)
    record = registry.show(spec)
    assert sorted(p.name for p in folder.iterdir()) == sorted(record["files"]), (spec, list(folder.iterdir()))
    for name, digest in record["files"].items():
        assert sha256_file(folder / name) == digest, (spec, name)
"""


def test_checkouts_from_eight_processes_at_once_all_succeed(model_dirs, tmp_path):
    backbone = Backbone.from_pretrained(str(model_dirs["bert"]))
    registry = Registry(tmp_path / "reg")
    art = save_prompt(
        PromptModel.create(backbone, "prefix", task_config(), {"num_virtual_tokens": 2, "hidden_size": 8}),
        tmp_path / "a",
    )
    specs = [f"x@{registry.push(art, 'x')['version']}" for _ in range(24)]
    # One version's checkout is damaged: every process finds it so and repairs it.
    registry.checkout(specs[5])
    damaged = registry.root / "checkouts" / "x" / "6" / "prompt.safetensors"
    damaged.write_bytes(b"damaged")
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", CHECKOUTS, str(registry.root), *specs],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(8)
    ]
    outputs = [p.communicate(timeout=300)[0] for p in processes]
    assert [p.returncode for p in processes] == [0] * 8, "\n".join(outputs)
    assert not [p for p in (registry.root / "checkouts" / "x").iterdir() if p.name.startswith(".")]
