"""The versioned prompt registry: round trips, aliases, lineage, deletion, bad input, and pushes from
several processes at once."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SENTENCES

from prompttune import load_prompt
from prompttune.api import train_prompt
from prompttune.artifacts.registry import Registry, RegistryError
from prompttune.cli import main
from prompttune.errors import ArtifactError
from prompttune.storage import sha256_file


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES))
    return path


def trained(model_dirs, data, out, seed=0, **options):
    train_prompt(
        model=str(model_dirs["bert"]),
        method=options.pop("method", "soft_prompt"),
        train=str(data),
        eval=str(data),
        output=str(out),
        method_options={"num_virtual_tokens": 2},
        max_steps=2,
        template="{text} it was {mask} .",
        verbalizer="0:bad,1:good",
        batch_size=4,
        seed=seed,
        progress=False,
        **options,
    )
    return out


def logits(model, texts):
    from prompttune import Example

    batch = model.task.collate([model.task.encode(Example(t)) for t in texts], with_labels=False)
    with torch.no_grad():
        return model(batch)


def test_push_show_pull_round_trip(model_dirs, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    first = trained(model_dirs, data, tmp_path / "a", seed=1)
    record = registry.push(first, "sentiment", aliases=("production",))
    assert (record["version"], record["aliases"]) == (1, ["production"])
    meta = json.loads((first / "prompt.json").read_text())
    assert record["base_model"] == meta["base_model"]
    assert record["data_sha256"] == sha256_file(data)
    assert record["config"]["method"] == "soft_prompt" and record["config"]["task_config"]["labels"] == ["0", "1"]
    assert record["metrics"]["accuracy"] == json.loads((first / "metrics.json").read_text())["dev_metrics"]["accuracy"]
    assert record["created"] == meta["created"] and record["pushed"]
    assert record["digest"] == sha256_file(first / "prompt.safetensors")

    second = registry.push(trained(model_dirs, data, tmp_path / "b", seed=2), "sentiment")
    assert second["version"] == 2
    assert registry.resolve("sentiment") == ("sentiment", 2) == registry.resolve("sentiment@latest")
    assert registry.resolve("sentiment@production") == ("sentiment", 1)
    registry.set_alias("sentiment@2", "production")  # an alias moves; versions never change
    assert registry.resolve("sentiment@production") == ("sentiment", 2)
    assert [r["version"] for r in registry.list("sentiment")] == [1, 2]
    assert registry.list() == [
        {
            "name": "sentiment",
            "latest": 2,
            "versions": 2,
            "method": "soft_prompt",
            "task": "classification",
            "pushed": second["pushed"],
            "aliases": {"production": 2},
        }
    ]

    pulled = registry.pull("sentiment@1", tmp_path / "pulled")
    for name in ("prompt.json", "prompt.safetensors", "metrics.json"):
        assert (pulled / name).read_bytes() == (first / name).read_bytes()
    texts = ["the movie was great", "awful and boring"]
    torch.testing.assert_close(
        logits(load_prompt(registry.checkout("sentiment@1")), texts), logits(load_prompt(first), texts), rtol=0, atol=0
    )


def test_lineage_links_a_prompt_to_the_version_it_continued(model_dirs, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    base = trained(model_dirs, data, tmp_path / "base", method="prefix")
    registry.push(base, "topic")
    continued = trained(
        model_dirs, data, tmp_path / "more", method="prefix", init_from=str(registry.checkout("topic@1"))
    )
    record = registry.push(continued, "topic")
    assert record["parent"] == "topic@1"
    assert registry.show("topic@1")["parent"] is None


def test_delete_removes_versions_aliases_and_unused_files(model_dirs, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    a = trained(model_dirs, data, tmp_path / "a", seed=1)
    registry.push(a, "x", aliases=("prod",))
    registry.push(a, "y")  # the same files under another name: stored once
    b = registry.push(trained(model_dirs, data, tmp_path / "b", seed=2), "x")
    deleted = registry.delete("x@1")
    assert [(d["version"], d["aliases"]) for d in deleted] == [(1, ["prod"])]
    with pytest.raises(RegistryError, match="'x' has no alias 'prod'"):
        registry.resolve("x@prod")
    with pytest.raises(RegistryError, match="'x' has no version 1; it has \\[2\\]"):
        registry.show("x@1")
    y = registry.show("y")
    assert all((tmp_path / "reg" / "blobs" / d[:2] / d).is_file() for d in y["files"].values())  # still used by y
    registry.delete("y", all_versions=True)
    assert [r["name"] for r in registry.list()] == ["x"]
    blobs = {p.name for p in (tmp_path / "reg" / "blobs").rglob("*") if p.is_file()}
    assert blobs == set(b["files"].values())


def test_bad_input_is_refused_with_the_reason(model_dirs, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    with pytest.raises(ArtifactError, match="not a prompt artifact"):
        registry.push(tmp_path, "x")
    art = trained(model_dirs, data, tmp_path / "a")
    for bad in ("", "-x", "a b", "x@1"):
        with pytest.raises(RegistryError):
            registry.push(art, bad)
    for alias in ("3", "latest", "a/b"):
        with pytest.raises(RegistryError, match="alias"):
            registry.push(art, "x", aliases=(alias,))
    with pytest.raises(RegistryError, match="no prompt named 'x'"):
        registry.show("x")
    # Damaged tensors are caught before anything is stored.
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("prompt.json", "prompt.safetensors"):
        (broken / name).write_bytes((art / name).read_bytes())
    (broken / "prompt.safetensors").write_bytes(b"not tensors")
    with pytest.raises(ArtifactError, match="does not match the sha256"):
        registry.push(broken, "x")
    assert registry.list() == []


def test_a_push_that_fails_midway_leaves_no_version(model_dirs, data, tmp_path, monkeypatch):
    registry = Registry(tmp_path / "reg")
    art = trained(model_dirs, data, tmp_path / "a")
    calls = []
    original = Registry._store_blob

    def failing(self, source):
        calls.append(source)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, source)

    monkeypatch.setattr(Registry, "_store_blob", failing)
    with pytest.raises(OSError, match="disk full"):
        registry.push(art, "x")
    monkeypatch.undo()
    assert registry.list() == []
    assert registry.push(art, "x")["version"] == 1


PUSHER = """
import sys
from prompttune.artifacts.registry import Registry
registry = Registry(sys.argv[1])
for _ in range(int(sys.argv[4])):
    registry.push(sys.argv[2], sys.argv[3])
"""


def test_concurrent_pushes_from_several_processes_lose_nothing(model_dirs, data, tmp_path):
    artifacts = [trained(model_dirs, data, tmp_path / f"a{i}", seed=i) for i in range(4)]
    root = tmp_path / "reg"
    Registry(root)
    per_process = 5
    procs = [
        subprocess.Popen([sys.executable, "-c", PUSHER, str(root), str(a), "shared", str(per_process)])
        for a in artifacts
    ]
    assert [p.wait(timeout=300) for p in procs] == [0] * len(procs)
    registry = Registry(root)
    versions = registry.list("shared")
    assert [v["version"] for v in versions] == list(range(1, len(artifacts) * per_process + 1))
    digests = [sha256_file(a / "prompt.safetensors") for a in artifacts]
    assert sorted(v["digest"] for v in versions) == sorted(d for d in digests for _ in range(per_process))
    for v in versions:  # every version complete and readable
        pulled = registry.pull(f"shared@{v['version']}", tmp_path / "check" / str(v["version"]))
        assert sha256_file(pulled / "prompt.safetensors") == v["digest"]


def test_cli(model_dirs, data, tmp_path, capsys):
    art = trained(model_dirs, data, tmp_path / "a")
    reg = str(tmp_path / "reg")

    def run(*argv):
        code = main(["registry", "--registry", reg, *map(str, argv)])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = run("push", art, "--name", "sst2", "--alias", "production")
    assert code == 0, err
    assert json.loads(out)["version"] == 1
    code, out, _ = run("list")
    assert json.loads(out)["aliases"] == {"production": 1}
    code, out, _ = run("show", "sst2@production")
    assert json.loads(out)["method"] == "soft_prompt"
    code, out, _ = run("pull", "sst2@1", tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "prompt.safetensors").is_file()
    code, out, err = run("show", "sst2@7")
    assert code == 2 and "has no version 7" in err
    code, _, err = run("delete", "sst2@1")  # no terminal, no --yes: refused
    assert code == 2 and "--yes" in err
    assert Registry(reg).resolve("sst2") == ("sst2", 1)
    code, out, _ = run("delete", "sst2@1", "--yes")
    assert json.loads(out) == {"deleted": "sst2@1", "aliases": ["production"]}
    assert Registry(reg).list() == []


def test_pull_never_removes_what_it_did_not_write(model_dirs, data, tmp_path, monkeypatch):
    registry = Registry(tmp_path / "reg")
    registry.push(trained(model_dirs, data, tmp_path / "a", method="prefix"), "x")  # with training_state
    registry.push(trained(model_dirs, data, tmp_path / "b"), "y")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(
        RegistryError, match=r"mine is not empty \(notes.txt\); pull into a new or empty folder, or pass --force"
    ):
        registry.pull("x", mine)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    for inside in (registry.root, registry.root / "checkouts", tmp_path):
        with pytest.raises(RegistryError, match="the registry's own folder"):
            registry.pull("x", inside, force=True)
    assert [r["name"] for r in registry.list()] == ["x", "y"]
    monkeypatch.chdir(mine)  # `pull NAME .`
    with pytest.raises(RegistryError, match="is not empty"):
        registry.pull("x", ".")
    assert registry.pull("x", ".", force=True) == mine
    assert sorted(p.name for p in mine.iterdir()) == sorted(["notes.txt", *registry.show("x")["files"]])
    # Replacing it with a version without training state removes only the artifact's files that
    # version lacks.
    registry.pull("y", ".", force=True)
    assert sorted(p.name for p in mine.iterdir()) == sorted(["notes.txt", *registry.show("y")["files"]])
    assert (mine / "notes.txt").read_text() == "mine"
    load_prompt(mine)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert registry.pull("y", empty) == empty  # an empty folder is filled


def test_files_written_follow_the_umask(model_dirs, data, tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        art = trained(model_dirs, data, tmp_path / "a")
        registry = Registry(tmp_path / "reg")
        registry.push(art, "x")
        pulled = registry.pull("x", tmp_path / "pulled")
        checked_out = registry.checkout("x")
    finally:
        os.umask(old)
    for folder in (art, pulled, checked_out):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755, folder
        for path in folder.iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_names_and_versions_are_checked_exactly(model_dirs, data, tmp_path):
    registry = Registry(tmp_path / "reg")
    art = trained(model_dirs, data, tmp_path / "a")
    with pytest.raises(RegistryError, match="a prompt name is"):
        registry.push(art, "x\n")
    with pytest.raises(RegistryError, match="a prompt name is"):
        registry.show("x\n@1")
    with pytest.raises(RegistryError, match="alias"):
        registry.push(art, "x", aliases=("prod\n",))
    registry.push(art, "x")
    with pytest.raises(RegistryError, match="has no alias '99999999999999999999'"):
        registry.show("x@99999999999999999999")
    with pytest.raises(RegistryError, match="after '@' comes a version number"):
        registry.show("x@²")
    with pytest.raises(RegistryError) as error:  # a huge name is quoted in part
        registry.show("y" * 100001)
    assert "'" + "y" * 80 + "'... (100001 characters)" in str(error.value) and len(str(error.value)) < 300


def test_a_damaged_stored_file_is_reported_and_repaired_by_pushing_again(model_dirs, data, tmp_path):
    from prompttune.artifacts.registry import StoreDamaged

    registry = Registry(tmp_path / "reg")
    art = trained(model_dirs, data, tmp_path / "a")
    record = registry.push(art, "x")
    blob = registry.root / "blobs" / record["digest"][:2] / record["digest"]
    blob.chmod(0o644)
    blob.write_bytes(b"damaged")
    with pytest.raises(StoreDamaged, match="does not match its sha256; the registry's store is damaged"):
        registry.checkout("x")
    registry.push(art, "x")
    assert sha256_file(blob) == record["digest"]
    load_prompt(registry.checkout("x@1"))
    # A checkout damaged after it was made is made again when next used.
    (registry.checkout("x@1") / "prompt.safetensors").write_bytes(b"damaged")
    assert sha256_file(registry.checkout("x@1") / "prompt.safetensors") == record["digest"]


def test_pull_into_the_working_directory_writes_into_it(model_dirs, data, tmp_path, monkeypatch):
    registry = Registry(tmp_path / "reg")
    registry.push(trained(model_dirs, data, tmp_path / "a"), "x")
    here = tmp_path / "here"
    here.mkdir()
    inode = here.stat().st_ino
    monkeypatch.chdir(here)
    registry.pull("x", ".")  # empty: filled, not replaced (a shell in it keeps seeing it)
    assert here.stat().st_ino == inode
    assert sorted(p.name for p in Path(".").iterdir()) == sorted(registry.show("x")["files"])
