"""Several processes through Accelerate (gloo on CPU) train the same prompt as one process."""

import os
import subprocess
import sys

import torch
from conftest import SENTENCES
from safetensors.torch import load_file


def test_two_processes_match_one_process_with_the_same_global_batch(model_dirs, tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n" + "".join(f"{t},{l}\n" for t, l in SENTENCES * 2))
    common = [
        "train",
        "--model",
        str(model_dirs["bert"]),
        "--method",
        "soft_prompt",
        "--train",
        str(data),
        "--eval",
        str(data),
        "--template",
        "{text} it was {mask} .",
        "--verbalizer",
        "0:bad,1:good",
        "--num-virtual-tokens",
        "4",
        "--max-steps",
        "4",
        "--lr",
        "0.05",
        "--no-progress",
    ]
    env = {**os.environ, "ACCELERATE_USE_CPU": "1", "OMP_NUM_THREADS": "1"}
    single = subprocess.run(
        [sys.executable, "-m", "prompttune", *common, "--batch-size", "8", "--output", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert single.returncode == 0, single.stderr
    # --batch-size is per process: 2 processes x 4 = the single process's 8, the same examples per step.
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "prompttune",
            *common,
            "--batch-size",
            "4",
            "--output",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert double.returncode == 0, double.stderr
    assert len([line for line in double.stdout.splitlines() if line.startswith("{")]) == 1, "only rank 0 reports"
    one = load_file(str(tmp_path / "one" / "prompt.safetensors"))
    two = load_file(str(tmp_path / "two" / "prompt.safetensors"))
    assert not torch.equal(one["method.prompt"], torch.zeros_like(one["method.prompt"]))
    torch.testing.assert_close(two["method.prompt"], one["method.prompt"], atol=1e-5, rtol=1e-4)
