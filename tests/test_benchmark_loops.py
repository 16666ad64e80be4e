"""The PEFT loop the benchmarks share (benchmarks/peft_loop.py): a killed run resumes where it stopped."""

import csv
import importlib
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def llm_e2e(monkeypatch):
    return importlib.import_module("benchmarks.llm_e2e")


def _pairs(path: Path) -> Path:
    rows = [
        ("name[The Eagle], food[French]", "The Eagle serves French food."),
        ("name[Bibimbap House], area[riverside]", "Bibimbap House is by the riverside."),
        ("name[Alimentum], priceRange[cheap]", "Alimentum is cheap."),
        ("name[Aromi], customer rating[high]", "Aromi is rated highly."),
        ("name[Zizzi], eatType[pub]", "Zizzi is a pub."),
    ]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["mr", "ref"])
        writer.writerows(rows)
    return path


def test_a_peft_run_killed_after_a_checkpoint_resumes_to_the_weights_of_one_never_stopped(
    llm_e2e, model_dirs, tmp_path, monkeypatch
):
    """The loop's state (the prompt and AdamW's moments and step) is saved without pickle every
    `checkpoint_every` steps; a run stopped after one and started again ends where a run never
    stopped ends, and its saved state lies on the CPU whatever the device it trained on."""
    train = _pairs(tmp_path / "train.csv")
    args = SimpleNamespace(
        model=str(model_dirs["llama"]),
        steps=4,
        batch_size=2,
        checkpoint_every=2,
        seed=0,
        max_source_length=32,
        max_target_length=16,
    )
    whole = llm_e2e.train_peft("peft_prompt_tuning", args, train, tmp_path / "whole")

    loop = importlib.import_module("benchmarks.peft_loop")  # the loop every PEFT row trains with
    real_step, taken = loop.optimiser_step, []

    def stopped_after_three(*step_args, **kwargs):
        if len(taken) == 3:
            raise KeyboardInterrupt  # killed between the checkpoint at step 2 and the end
        taken.append(1)
        real_step(*step_args, **kwargs)

    monkeypatch.setattr(loop, "optimiser_step", stopped_after_three)
    with pytest.raises(KeyboardInterrupt):
        llm_e2e.train_peft("peft_prompt_tuning", args, train, tmp_path / "resumed")
    state = load_file(str(tmp_path / "resumed" / "loop" / "state.safetensors"))
    assert {t.device.type for t in state.values()} == {"cpu"}
    assert not (tmp_path / "resumed" / "summary.json").exists()

    monkeypatch.setattr(loop, "optimiser_step", real_step)
    resumed = llm_e2e.train_peft("peft_prompt_tuning", args, train, tmp_path / "resumed")
    assert resumed["training"]["steps"] == whole["training"]["steps"] == 4
    ours = load_file(str(tmp_path / "resumed" / "adapter" / "adapter_model.safetensors"))
    theirs = load_file(str(tmp_path / "whole" / "adapter" / "adapter_model.safetensors"))
    assert ours.keys() == theirs.keys()
    start = llm_e2e.peft_start("peft_prompt_tuning", args.model, args.seed)[1].prompt_encoder["default"]
    assert not torch.equal(theirs["prompt_embeddings"], start.embedding.weight.detach())  # training moved it
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=0, atol=0)


def test_benchmark_settings_name_the_device_only_off_the_cpu(llm_e2e, monkeypatch):
    """Runs on a CPU keep the setting the published results were made with; a GPU's runs (bf16
    autocast) get a setting of their own, so a report never mixes the two."""
    common = importlib.import_module("benchmarks.common")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert common.run_device() == "cpu" and common.device_setting() == {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert common.run_device() == "cuda" and common.device_setting() == {"device": "cuda"}
