"""The benchmarks' report helpers: a report written after one more method keeps what was published."""

import importlib.util
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.same_on_every_transformers  # reaches no transformers code

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def common(tmp_path, monkeypatch):
    module = importlib.import_module("benchmarks.common")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    return module


def _finish(work: Path, method: str, setting: dict, row: dict) -> None:
    (work / method).mkdir(parents=True)
    (work / method / "result.json").write_text(json.dumps({"setting": setting, "row": row}))


def test_rows_merge_the_published_ones_with_the_runs_finished_here(common, tmp_path):
    setting = {"steps": 150, "seed": 0}
    common.write_results("bench", {"setting": setting, "rows": {"a": {"score": 1.0}, "b": {"score": 2.0}}}, "# old\n")
    work = tmp_path / "runs"
    _finish(work, "b", setting, {"score": 3.0})  # rerun here: the run folder wins
    _finish(work, "c", setting, {"score": 4.0})  # new
    _finish(work, "d", {"steps": 10, "seed": 0}, {"score": 5.0})  # another setting: not this report's
    rows = common.finished_rows("bench", work, ("c", "a", "b", "d"), setting)
    assert rows == {"c": {"score": 4.0}, "a": {"score": 1.0}, "b": {"score": 3.0}}
    assert list(rows) == ["c", "a", "b"]


def test_rows_published_for_another_setting_are_not_taken(common, tmp_path):
    common.write_results("bench", {"setting": {"steps": 150}, "rows": {"a": {"score": 1.0}}}, "# old\n")
    assert common.finished_rows("bench", tmp_path / "runs", ("a",), {"steps": 300}) == {}
    assert common.finished_rows("bench", tmp_path / "runs", ("a",), {"steps": 150}) == {"a": {"score": 1.0}}


def test_results_are_written_whole(common):
    common.write_results("bench", {"rows": {}}, "# table\n")
    assert json.loads((common.RESULTS / "bench.json").read_text()) == {"rows": {}}
    assert (common.RESULTS / "bench.md").read_text() == "# table\n"
    assert sorted(p.name for p in common.RESULTS.iterdir()) == ["bench.json", "bench.md"]


@pytest.fixture
def make_results():
    module = importlib.import_module("benchmarks.make_results")
    return module


def _e2e_row(greedy: float, beam: float, **extra) -> dict:
    return {"scores": {"greedy": {"bleu": greedy}, "beam5": {"bleu": beam}}, "transformers": "5.24.0", **extra}


def test_peft_rows_decoded_in_padded_batches_are_shown_beside_one_at_a_time(make_results):
    """Each PEFT row's BLEU both ways with the outputs that changed; rows scored before PEFT was
    decoded one at a time are named as decoded in padded batches."""
    padded = {"greedy": {"bleu": 51.71, "outputs_changed": 38}, "beam5": {"bleu": 56.08, "outputs_changed": 37}}
    draws = [
        {
            "setting": {"seed": 0, "dev_size": 50},
            "rows": {"soft_prompt": _e2e_row(48.0, 56.0), "peft_prefix_tuning_noproj": _e2e_row(55.2, 58.0)},
        },
        {
            "setting": {"seed": 1, "dev_size": 50},
            "rows": {
                "peft_prompt_tuning": _e2e_row(
                    54.57, 56.14, decoded="one MR at a time", scores_padded_batches=padded, padded_batch_size=25
                )
            },
        },
    ]
    text = make_results.llm_e2e_padded_peft(draws)
    assert "PEFT's rows decoded in padded batches of 25" in text
    assert "| peft_prompt_tuning | 1 | greedy | 54.57 | 51.71 | 38 of 50 |" in text
    assert "| peft_prompt_tuning | 1 | beam5 | 56.14 | 56.08 | 37 of 50 |" in text
    assert "peft_prefix_tuning_noproj (seed 0): decoded in padded batches" in text
    assert "soft_prompt" not in text
    assert make_results.llm_e2e_padded_peft(draws[:1]) == ""  # no PEFT row decoded both ways: nothing to show


def test_the_same_start_rows_are_compared_with_peft_on_their_own_draw(make_results):
    apart = {"distance": 0.004, "share_of_training_move": 0.000396}
    draws = [
        {"setting": {"seed": 0}, "rows": {"peft_prompt_tuning": _e2e_row(51.3, 56.5)}},
        {
            "setting": {"seed": 2},
            "rows": {
                "peft_prompt_tuning": _e2e_row(52.46, 62.12, transformers="5.23.0"),
                "soft_prompt_peft_start": _e2e_row(52.46, 62.12, apart_from_peft=apart),
            },
        },
    ]
    text = make_results.llm_e2e_same_start(draws)
    assert (
        "- seed 2: BLEU greedy 52.46 against 52.46; beam 62.12 against 62.12; the two trained prompts end 0.004 "
        "apart, 0.04% of the distance" in text
    )
    assert "PEFT's row trained on transformers 5.23.0, this one on 5.24.0" in text
    assert "seed 0" not in text
    assert make_results.llm_e2e_same_start(draws[:1]) == ""
    assert "prefix_peft_start" not in text  # no prefix row started from PEFT's weights: no paragraph for it


def test_prefix_tuning_from_peft_start_gets_its_own_paragraph_with_the_budget(make_results):
    apart = {"distance": 0.5, "share_of_training_move": 0.0123}
    draws = [
        {"setting": {"seed": 0}, "rows": {}},
        {
            "setting": {"seed": 3},
            "rows": {
                "peft_prefix_tuning": _e2e_row(64.63, 66.08, transformers="5.23.0"),
                "prefix_peft_start": _e2e_row(64.1, 66.2, apart_from_peft=apart),
            },
        },
    ]
    text = make_results.llm_e2e_same_start(draws, ", 500 steps")
    assert (
        "`--methods prefix_peft_start`), the two trained prompts compared as the keys and values inference "
        "reads, 500 steps:\n- seed 3: BLEU greedy 64.10 against 64.63; beam 66.20 against 66.08; the two trained "
        "prompts end 0.500 apart, 1.23% of the distance" in text
    )
    assert "soft_prompt_peft_start" not in text
    assert "nudged" not in text
    draws[1]["rows"]["prefix_peft_start_nudged"] = _e2e_row(
        63.5,
        65.0,
        apart_from_peft={
            "distance": 0.45,
            "share_of_training_move": 0.011,
            "from_unnudged": {"distance": 0.4, "share_of_training_move": 0.0098},
        },
    )
    text = make_results.llm_e2e_same_start(draws, ", 500 steps")
    assert (
        "- seed 3, the same start nudged (every weight times 1 + 1e-6 x N(0, 1), a draw of its own; row "
        "`prefix_peft_start_nudged`): BLEU greedy 63.50; beam 65.00; its trained prompt ends 0.98% of that distance "
        "from the run started without the nudge and 1.10% from PEFT's" in text
    )
    assert "runs from that start" not in text  # one nudge: no spread to give
    draws[1]["rows"]["prefix_peft_start_nudged2"] = _e2e_row(
        64.7,
        65.6,
        apart_from_peft={
            "distance": 0.45,
            "share_of_training_move": 0.011,
            "from_unnudged": {"distance": 0.4, "share_of_training_move": 0.0098},
        },
    )
    text = make_results.llm_e2e_same_start(draws, ", 500 steps")
    assert (
        "- seed 3, the 3 runs from that start (mean ± sd, range): BLEU greedy 64.10 ± 0.60 (63.50 to 64.70); "
        "beam 65.60 ± 0.60 (65.00 to 66.20)" in text
    )


def test_starting_prompts_are_compared_across_draws_and_beside_the_rows_of_their_seeds(
    make_results, tmp_path, monkeypatch
):
    """The conclusion follows the numbers: draws whose losses agree within two standard errors are
    called the same, others are not."""
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    draws = [
        {
            "setting": {"seed": 0},
            "rows": {"soft_prompt": _e2e_row(48.26, 56.77), "peft_prompt_tuning": _e2e_row(51.3, 56.52)},
        }
    ]
    assert make_results.llm_prompt_starts(draws) == ""  # not measured: nothing to show

    def write(ours, theirs):
        starts = [
            {"seed": i, "prompttune": {"loss": a, "row_norm": 3.2}, "peft": {"loss": b, "row_norm": 3.1}}
            for i, (a, b) in enumerate(zip(ours, theirs))
        ]
        summary = {
            f"{lib}_{key}": {"mean": sum(d[lib][key] for d in starts) / len(starts), "sd": sd}
            for lib in ("prompttune", "peft")
            for key, sd in (("loss", 0.05), ("row_norm", 0.1))
        }
        (tmp_path / "llm_prompt_starts.json").write_text(
            json.dumps({"setting": {"draws": len(starts), "pairs": 32}, "draws": starts, "summary": summary})
        )

    write([3.80, 3.70, 3.75, 3.75], [3.71, 3.79, 3.74, 3.76])
    text = make_results.llm_prompt_starts(draws)
    assert "seeds 0 to 3" in text and "+0.000 (0.0 standard errors)" in text
    assert "do not differ here" in text
    assert "seed 0: starting loss 3.800 against 3.710, greedy BLEU 48.26 against 51.30" in text
    write([3.90, 3.95, 3.92, 3.93], [3.70, 3.72, 3.71, 3.69])
    text = make_results.llm_prompt_starts(draws)
    assert "the two ways of drawing differ" in text and "do not differ" not in text


def test_the_low_data_report_says_how_peft_cells_were_decoded(make_results):
    older = {"setting": {"eval_batch_size": 25}, "summary": {"prefix": {}, "peft_prompt_tuning": {}}}
    assert "PEFT's cells were decoded in padded batches of 25, which changes" in make_results.lowdata_peft_decoding(
        older
    )
    newer = dict(older, peft_decoding="peft_prompt_tuning's cells were decoded one MR at a time.")
    assert make_results.lowdata_peft_decoding(newer) == " peft_prompt_tuning's cells were decoded one MR at a time."
    assert make_results.lowdata_peft_decoding({"setting": {}, "summary": {"prefix": {}}}) == ""


def test_e2e_targets_over_draws_give_the_mean_margin_its_standard_error_and_the_draws_met(
    make_results, tmp_path, monkeypatch
):
    """Other draws of the same setting join the first; a target's margin is averaged over the draws
    that ran both its methods, with the standard error of that mean; another setting stays out."""
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    setting = {"train_size": 2000, "steps": 200, "seed": 0}

    def draw(seed, soft, peft, **changes):
        return {
            "setting": setting | {"seed": seed} | changes,
            "rows": {"soft_prompt": _e2e_row(soft, soft), "peft_prompt_tuning": _e2e_row(peft, peft)},
        }

    first = draw(0, 48.0, 51.0)
    assert make_results.llm_e2e_draws(first) == ""  # one draw: nothing to add
    (tmp_path / "llm_e2e_seed1.json").write_text(json.dumps(draw(1, 50.0, 51.0)))
    (tmp_path / "llm_e2e_seed2.json").write_text(json.dumps(draw(2, 53.0, 51.0)))
    (tmp_path / "llm_e2e_seed3.json").write_text(json.dumps(draw(3, 10.0, 90.0, steps=400)))
    text = make_results.llm_e2e_draws(first)
    assert "seeds 1, 2" in text and "llm_e2e_seed3" not in text
    # margins -3, -1, +2: mean -0.67, standard deviation 2.52, standard error 2.52 / sqrt(3) = 1.45
    assert "- soft_prompt >= PEFT's prompt tuning: greedy -0.67 ± 1.45 (1 of 3); beam -0.67 ± 1.45 (1 of 3)" in text


def test_bleu_against_parameters_is_averaged_over_the_draws_that_ran_each_method(make_results):
    """A point per method: its mean and standard deviation over the draws that ran it, how many they
    were, and its trainable parameters; a draw without the method or the decoding does not count,
    and the rows that analyse a start are not methods."""

    def draw(rows):
        return {"setting": {"seed": 0}, "rows": rows}

    draws = [
        draw(
            {
                "prefix": _e2e_row(60.0, 66.0, trainable_parameters=6_000_000),
                "zero_shot": _e2e_row(16.0, 17.0, trainable_parameters=0),
                "prefix_peft_start": _e2e_row(1.0, 1.0, trainable_parameters=6_000_000),
            }
        ),
        draw({"prefix": _e2e_row(64.0, 67.0, trainable_parameters=6_000_000)}),
        draw({"prefix": {"scores": {"greedy": {"bleu": 62.0}}, "trainable_parameters": 6_000_000}}),
    ]
    greedy = make_results.e2e_param_points(draws, "greedy")
    assert set(greedy) == {"prefix", "zero_shot"}
    assert greedy["prefix"] == {"parameters": 6_000_000, "mean": 62.0, "sd": 2.0, "draws": 3}
    assert greedy["zero_shot"] == {"parameters": 0, "mean": 16.0, "sd": 0.0, "draws": 1}
    beam = make_results.e2e_param_points(draws, "beam5")["prefix"]
    assert (beam["mean"], beam["draws"]) == (66.5, 2) and beam["sd"] == pytest.approx(0.7071, abs=1e-4)


def test_the_parameters_plot_has_a_row_of_panels_per_budget(make_results, tmp_path, monkeypatch):
    """Every budget gets its greedy and beam panels, each method its point with the seed spread as
    an error bar; the figure is written whole as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(seed, bleu):
        return {
            "setting": {"seed": seed},
            "rows": {
                "prefix": _e2e_row(bleu, bleu + 2, trainable_parameters=6_000_000),
                "peft_prompt_tuning": _e2e_row(bleu - 8, bleu - 6, trainable_parameters=11_520),
                "zero_shot": _e2e_row(16.0, 17.0, trainable_parameters=0),
            },
        }

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to look at
    path = tmp_path / "params.png"
    make_results.plot_e2e_params({200: [draw(0, 60.0), draw(1, 62.0)], 500: [draw(0, 64.0)]}, path)
    assert path.read_bytes().startswith(b"\x89PNG")
    (figure,) = figures
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == [
        "200 steps of 8, greedy",
        "200 steps of 8, beam search, 5 beams",
        "500 steps of 8, greedy",
        "500 steps of 8, beam search, 5 beams",
    ]
    greedy_200 = figure.axes[0]
    points = sorted(tuple(line.get_xydata()[0]) for line in greedy_200.lines if line.get_marker() in ("o", "s"))
    assert points == [(11_520, 53.0), (6_000_000, 61.0)]
    assert any("zero_shot 16.0" in text.get_text() for text in greedy_200.texts)

    def bars(axis):  # each point's error bar as (x, low, high); none for a single draw
        found = []
        for container in axis.containers:
            for collection in container.lines[2]:
                ((low, high),) = [sorted(y for _, y in segment) for segment in collection.get_segments()]
                found.append((container.lines[0].get_xydata()[0][0], round(low, 3), round(high, 3)))
        return sorted(found)

    assert bars(greedy_200) == [(11_520, 51.586, 54.414), (6_000_000, 59.586, 62.414)]  # sd 1.414 over 2 draws
    assert bars(figure.axes[2]) == []


def test_samsum_at_other_budgets_is_shown_beside_the_first(make_results, tmp_path, monkeypatch):
    """Results of the same setting but the steps join the SAMSum section by budget, with the target
    at each budget that has a prefix and fine-tuning; another setting stays out."""
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    setting = {"train_size": 1000, "batch_size": 8, "seed": 0, "steps": 150}
    prefix = {
        "prefix": {"method": "prefix", "options": {}},
        "full_finetune": {"method": "full_finetune", "options": {}},
    }

    def result(steps, rows, **changes):
        return {
            "setting": setting | {"steps": steps} | changes,
            "methods": prefix,
            "rows": {m: {"rougeL": v} for m, v in rows.items()},
        }

    first = result(150, {"zero_shot": 16.93, "prefix": 31.72, "full_finetune": 35.79})
    assert make_results.llm_samsum_budgets(first) == ""
    (tmp_path / "llm_samsum_375.json").write_text(json.dumps(result(375, {"prefix": 34.5, "full_finetune": 36.0})))
    (tmp_path / "llm_samsum_other.json").write_text(json.dumps(result(375, {"prefix": 99.0}, seed=1)))
    text = make_results.llm_samsum_budgets(first)
    assert "`python -m benchmarks.llm_samsum --steps 375 --name llm_samsum_375`" in text
    assert "| method | 150 steps (1.2 passes) | 375 steps (3.0 passes) |" in text
    assert "| prefix | 31.72 | 34.50 |" in text and "| full_finetune | 35.79 | 36.00 |" in text
    assert "zero_shot" not in text and "99.00" not in text
    assert "- 150 steps: prefix not met (-4.07 points)" in text
    assert "- 375 steps: prefix met (-1.50 points)" in text


def test_e2e_at_other_budgets_is_shown_beside_the_first_with_each_target(make_results, tmp_path, monkeypatch):
    """Results of the same setting but the steps join the E2E section by budget; each target is
    judged at a longer budget that ran both its methods; other draws and settings stay out."""
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    setting = {"train_size": 2000, "batch_size": 8, "seed": 0, "steps": 200}

    def result(steps, rows, **changes):
        return {"setting": setting | {"steps": steps} | changes, "rows": {m: _e2e_row(*v) for m, v in rows.items()}}

    first = result(200, {"prefix": (61.33, 67.41), "full_finetune": (65.55, 66.81), "zero_shot": (16.76, 17.38)})
    assert make_results.llm_e2e_budgets(first) == ""
    (tmp_path / "llm_e2e_500.json").write_text(
        json.dumps(result(500, {"prefix": (64.9, 68.0), "full_finetune": (65.5, 67.0)}))
    )
    (tmp_path / "llm_e2e_seed1.json").write_text(json.dumps(result(200, {"prefix": (99.0, 99.0)}, seed=1)))
    (tmp_path / "llm_e2e_other.json").write_text(json.dumps(result(500, {"prefix": (98.0, 98.0)}, train_size=500)))
    text = make_results.llm_e2e_budgets(first)
    assert "`python -m benchmarks.llm_e2e --steps 500 --name llm_e2e_500`" in text
    assert (
        "| method | greedy 200 steps (0.8 passes) | greedy 500 steps (2.0 passes) | beam 200 steps (0.8 passes) "
        "| beam 500 steps (2.0 passes) |"
    ) in text
    assert "| prefix | 61.33 | 64.90 | 67.41 | 68.00 |" in text
    assert "zero_shot" not in text and "99.00" not in text and "98.00" not in text
    assert (
        "- prefix >= full_finetune - 1 BLEU, 500 steps: greedy met (prefix 64.90, full_finetune 65.50); "
        "beam met (prefix 68.00, full_finetune 67.00)"
    ) in text
    assert "PEFT" not in text


def test_e2e_at_a_longer_budget_on_other_draws_gives_each_target_over_those_draws(make_results, tmp_path, monkeypatch):
    """Draws of a longer budget (NAME_seedN.json beside NAME.json) are shown by seed under that budget,
    with each target's margin over them; draws of another budget or setting stay out."""
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    setting = {"train_size": 2000, "batch_size": 8, "seed": 0, "steps": 200}

    def result(steps, seed, soft, peft, **changes):
        return {
            "setting": setting | {"steps": steps, "seed": seed} | changes,
            "rows": {"soft_prompt": _e2e_row(soft, soft + 1), "peft_prompt_tuning": _e2e_row(peft, peft)},
        }

    first = result(200, 0, 48.0, 51.0)
    (tmp_path / "llm_e2e_500.json").write_text(json.dumps(result(500, 0, 56.0, 55.0)))
    assert "other draws" not in make_results.llm_e2e_budgets(first)
    (tmp_path / "llm_e2e_500_seed1.json").write_text(json.dumps(result(500, 1, 54.0, 56.0)))
    (tmp_path / "llm_e2e_500_seed2.json").write_text(json.dumps(result(500, 2, 99.0, 10.0, train_size=500)))
    (tmp_path / "llm_e2e_seed1.json").write_text(json.dumps(result(200, 1, 97.0, 10.0)))
    text = make_results.llm_e2e_budgets(first)
    assert "At 500 steps on other draws (seed 1, " in text
    assert "`python -m benchmarks.llm_e2e --seed 1 --steps 500 --name llm_e2e_500_seed1`" in text
    assert "| soft_prompt | 56.00 | 54.00 | 57.00 | 55.00 | 55.00 (2) | 56.00 (2) |" in text
    # margins +1 and -2: mean -0.50, standard deviation 2.12, standard error 1.50
    assert "- soft_prompt >= PEFT's prompt tuning: greedy -0.50 ± 1.50 (1 of 2); beam +0.50 ± 1.50 (1 of 2)" in text
    assert "99.00" not in text and "97.00" not in text


def test_the_small_decoder_section_shows_peft_rows_decoded_both_ways(make_results, tmp_path, monkeypatch):
    """The 2.6 M decoder's PEFT rows are scored one source at a time; what padded batches give is
    shown beside, for the rows that carry it."""
    monkeypatch.setattr(make_results, "RESULTS", tmp_path)
    run = {
        "scores": {"bleu": 25.0, "chrf": 35.0, "rougeL": 37.0},
        "trainable_parameters": 3840,
        "artifact_bytes": 21000,
        "seconds_per_step": 0.2,
    }
    data = {
        "args": {"train_size": 2000, "steps": 400, "batch_size": 16, "dev_size": 100, "methods": "x"},
        "pretraining": {
            "config": {"n_layer": 4, "n_embd": 192, "vocab_size": 4096},
            "parameters": 2615424,
            "texts": 60163,
            "steps": 800,
            "seconds": 733.0,
        },
        "runs": {
            "soft_prompt": run,
            "peft_prompt_tuning": run
            | {"scores_padded_batches": {"bleu": 21.5, "batch_size": 32, "outputs_changed": 71}},
        },
    }
    (tmp_path / "e2e_generation.json").write_text(json.dumps(data))
    text = make_results.e2e_methods()
    assert (
        "- PEFT `PromptTuningConfig` (20 tokens, sample_vocab): BLEU 25.00 one at a time, 21.50 in batches of 32; "
        "71 of 100 outputs changed"
    ) in text
    del data["runs"]["peft_prompt_tuning"]["scores_padded_batches"]
    (tmp_path / "e2e_generation.json").write_text(json.dumps(data))
    assert "padded" not in make_results.e2e_methods()


@pytest.fixture
def lowdata(tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("benchmarks.llm_e2e_lowdata")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(importlib.import_module("benchmarks.common"), "RESULTS", tmp_path / "results")  # write_results
    monkeypatch.setattr(module, "BASE", tmp_path / "runs")
    (tmp_path / "results").mkdir()
    return module


def test_a_low_data_report_after_some_cells_keeps_the_cells_published_before(lowdata, tmp_path):
    """Run folders are scratch: rerunning PEFT's cells alone must not drop the other methods' cells
    from the published results, and a cell run again replaces its published scores."""
    import argparse

    args = argparse.Namespace(
        model="smollm2",
        sizes="50",
        seeds="0,1",
        methods="prefix",
        dev_size=50,
        steps=100,
        batch_size=8,
        eval_batch_size=25,
        max_source_length=64,
        max_target_length=64,
        checkpoint_every=20,
        report=True,
    )

    def row(bleu, **extra):
        return {
            "scores": {"greedy": {m: bleu for m in lowdata.METRICS}, "beam5": {"bleu": 0.0}},
            "transformers": "5.24.0",
            "trainable_parameters": 1,
            **extra,
        }

    def finish(method, seed, bleu, **extra):
        folder = tmp_path / "runs" / f"n50_s{seed}" / method
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "result.json").write_text(
            json.dumps({"setting": lowdata.setting_of(lowdata.cell_args(args, 50, seed)), "row": row(bleu, **extra)})
        )

    for seed, bleu in ((0, 40.0), (1, 42.0)):
        finish("prefix", seed, bleu)
        finish("peft_prompt_tuning", seed, 30.0)
    cells = lowdata.finished(args)
    lowdata.write_results("llm_e2e_lowdata", {"setting": vars(args), "cells": cells}, "# table\n")
    assert (tmp_path / "results" / "llm_e2e_lowdata.json").is_file()
    for done in (tmp_path / "runs").rglob("result.json"):
        done.unlink()  # the run folders' results go; the results file stays
    finish("peft_prompt_tuning", 0, 35.0, decoded="one MR at a time")
    rerun = argparse.Namespace(**(vars(args) | {"methods": "peft_prompt_tuning", "seeds": "0"}))
    cells = lowdata.finished(rerun)
    assert cells["prefix"][50] == {0: lowdata.compact(row(40.0)), 1: lowdata.compact(row(42.0))}
    assert cells["peft_prompt_tuning"][50][0]["scores"]["greedy"]["bleu"] == 35.0
    assert cells["peft_prompt_tuning"][50][0]["decoded"] == "one MR at a time"
    assert cells["peft_prompt_tuning"][50][1]["scores"]["greedy"]["bleu"] == 30.0
    assert lowdata.peft_decoding(cells, rerun) == (
        "peft_prompt_tuning's cells were decoded in padded batches of 25 (1 of 2 cells) and one MR at a time (1 of 2 "
        "cells), which changes its outputs (they are not yet decoded again one at a time)."
    )
    cells["peft_prefix_tuning"] = {50: {0: lowdata.compact(row(50.0))}}
    cells["peft_prompt_tuning"][50][1]["decoded"] = "one MR at a time"
    assert lowdata.peft_decoding(cells, rerun) == (
        "peft_prompt_tuning's cells were decoded one MR at a time. peft_prefix_tuning's cells were decoded in padded "
        "batches of 25, which leaves its outputs as they are."
    )
    other = argparse.Namespace(**(vars(args) | {"steps": 200}))
    assert lowdata.finished(other) == {}  # published for another setting: not taken


def test_the_low_data_report_shows_what_padded_batches_do_to_peft_cells_decoded_both_ways(lowdata):
    import argparse

    args = argparse.Namespace(eval_batch_size=25, dev_size=50)

    def cell(alone, padded=None, changed=0):
        row = {
            "scores": {"greedy": {m: alone for m in lowdata.METRICS}},
            "transformers": "5.23.0",
            "decoded": "one MR at a time",
        }
        if padded is not None:
            row["scores_padded_batches"] = {"greedy": {"bleu": padded, "outputs_changed": changed}}
        return lowdata.compact(row)

    cells = {
        "peft_prompt_tuning": {50: {0: cell(40.0, 38.0, 31), 1: cell(44.0, 45.0, 40)}, 100: {0: cell(50.0)}},
        "prefix": {50: {0: cell(41.0, 0.0, 50)}},
    }
    (effect,) = lowdata.padding_effect(cells, args)  # prompttune's cells are not PEFT's: not shown
    assert (effect["method"], effect["cells"]) == ("peft_prompt_tuning", 2)  # the cell decoded one way only: out
    assert effect["line"] == (
        "peft_prompt_tuning, decoded in padded batches of 25 instead of one MR at a time: BLEU "
        "41.50 against 42.00 on average over 2 cells, moving -2.00 to +1.00 by cell, with 31 to "
        "40 of 50 outputs changed."
    )
    assert lowdata.padding_effect({"peft_prompt_tuning": {100: {0: cell(50.0)}}}, args) == []


def test_low_data_comparisons_pool_every_cell_of_every_size_after_the_sizes(lowdata):
    def stats(by_size):
        return {size: {"bleu": {"by_seed": dict(enumerate(scores))}} for size, scores in by_size.items()}

    found = lowdata.comparisons(
        {
            "soft_prompt": stats({50: [40.0, 44.0], 100: [50.0, 45.0]}),
            "peft_prompt_tuning": stats({50: [41.0, 43.0], 100: [47.0, 48.0]}),
        }
    )
    assert [c["size"] for c in found] == [50, 100, "all"]
    pooled = found[-1]
    # gaps -1, +1, +3, -3: mean 0, sample sd 2.58, standard error 1.29
    assert (pooled["cells"], pooled["a_ahead_on"]) == (4, 2)
    assert pooled["line"] == (
        "every size, 4 cells: the soft prompt +0.00 BLEU on average ± 1.29 (standard error over "
        "the cells); ahead on 2 of 4"
    )
    one_size = lowdata.comparisons({"soft_prompt": stats({50: [40.0]}), "peft_prompt_tuning": stats({50: [41.0]})})
    assert [c["size"] for c in one_size] == [50]


@pytest.fixture
def starts(tmp_path, monkeypatch):
    import importlib

    module = importlib.import_module("benchmarks.llm_prompt_starts")
    monkeypatch.setattr(module, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(module, "WORK", tmp_path / "runs")
    (tmp_path / "results").mkdir()
    return module


def _trained(library: str, seed: int, greedy: float, beam: float) -> dict:
    return {
        "start": library,
        "seed": seed,
        "train_seconds": 500.0,
        "scores": {"greedy": {"bleu": greedy, "chrf": 50.0}, "beam5": {"bleu": beam, "chrf": 55.0}},
    }


def test_starts_trained_here_join_those_published_for_the_same_training(starts, tmp_path):
    """Run folders are scratch: a report after one more start keeps the starts published before, a
    start trained again replaces its published row, and a run of another training is not taken."""
    training = dict(starts.TRAINING, model="m", max_source_length=64, max_target_length=64)
    (tmp_path / "results" / "llm_prompt_starts.json").write_text(
        json.dumps(
            {"training": training, "trained": [_trained("prompttune", 0, 48.0, 56.0), _trained("peft", 0, 51.0, 56.5)]}
        )
    )

    def finish(library, seed, row, setting=training):
        folder = tmp_path / "runs" / f"{library}_start{seed}"
        folder.mkdir(parents=True)
        (folder / "result.json").write_text(
            json.dumps({"setting": setting | {"start": library, "start_seed": seed}, "row": row})
        )

    finish("peft", 1, _trained("peft", 1, 50.0, 57.0))
    finish("prompttune", 1, _trained("prompttune", 1, 52.0, 58.0))
    finish("peft", 0, _trained("peft", 0, 49.0, 55.0))  # trained again: replaces the published row
    finish("prompttune", 2, _trained("prompttune", 2, 1.0, 1.0), dict(training, steps=2))  # another training
    rows = starts.trained_starts(training)
    assert [(r["start"], r["seed"]) for r in rows] == [("prompttune", 0), ("peft", 0), ("prompttune", 1), ("peft", 1)]
    assert rows[1]["scores"]["greedy"]["bleu"] == 49.0


def test_trained_starts_are_compared_as_two_groups_of_independent_draws(starts):
    rows = [
        _trained("prompttune", 0, 48.0, 56.0),
        _trained("peft", 0, 51.0, 56.0),
        _trained("prompttune", 1, 52.0, 60.0),
        _trained("peft", 1, 50.0, 57.0),
        _trained("prompttune", 2, 47.0, 55.0),
    ]  # its PEFT twin not trained yet: the groups differ in size
    summary = starts.trained_summary(rows)
    greedy = summary["greedy"]
    assert greedy["prompttune"]["count"] == 3 and greedy["prompttune"]["mean"] == pytest.approx(49.0)
    assert greedy["prompttune"]["sd"] == pytest.approx(7**0.5, abs=1e-4)
    assert greedy["peft"]["mean"] == pytest.approx(50.5) and greedy["peft"]["sd"] == pytest.approx(0.7071, abs=1e-4)
    assert greedy["difference"]["mean_gap"] == pytest.approx(-1.5)
    assert greedy["difference"]["standard_error"] == pytest.approx((7 / 3 + 0.5 / 2) ** 0.5, abs=1e-4)
    assert summary["beam5"]["difference"]["mean_gap"] == pytest.approx(0.5)
    assert "difference" not in starts.trained_summary(rows[:3])["greedy"]  # one PEFT start: no spread to compare
    payload = {
        "setting": {"draws": 3, "pairs": 32, "num_virtual_tokens": 20},
        "draws": [{"seed": 0, "prompttune": {"loss": 3.97, "row_norm": 3.2}, "peft": {"loss": 3.84, "row_norm": 3.1}}],
        "summary": {
            f"{lib}_{key}": {"mean": 3.0, "sd": 0.1} for lib in starts.LIBRARIES for key in ("loss", "row_norm")
        },
        "training": starts.TRAINING,
        "trained": rows,
        "trained_summary": summary,
    }
    text = starts.markdown(payload)
    assert "| 0 | peft | 3.8400 | 51.00 | 56.00 | 50.00 | 500 |" in text
    assert "| 2 | prompttune | - | 47.00 | 55.00 |" in text  # no starting loss measured for seed 2
    assert "| prompttune | 49.00 ± 2.65 (3) | 57.00 ± 2.65 (3) |" in text
    assert "Greedy, prompttune's starts against PEFT's: -1.50 ± 1.61 BLEU (difference of the means" in text


def test_the_published_starts_section_says_how_trained_starts_compare(make_results):
    def summary(gap, error):
        entry = {
            "prompttune": {"mean": 50.0 + gap, "sd": 4.0, "count": 6},
            "peft": {"mean": 50.0, "sd": 2.0, "count": 6},
            "difference": {"mean_gap": gap, "standard_error": error},
        }
        return {
            "training": {"train_size": 2000, "data_seed": 0, "steps": 200, "batch_size": 8},
            "trained": [],
            "trained_summary": {"greedy": entry, "beam5": entry},
        }

    assert make_results.trained_starts({}) == ""
    level = make_results.trained_starts(summary(-0.75, 1.8))
    assert "the 2,000 pairs of the seed-0 rows in their order, 200 steps of 8" in level and "--train 0" in level
    assert (
        "greedy, 49.25 (sd 4.00, 6 starts) from prompttune's starts and 50.00 (sd 2.00, 6 starts) from PEFT's, "
        "-0.75 ± 1.80 (standard error)"
    ) in level
    assert "within two standard errors" in level and "varies by 4.00 and 2.00" in level
    behind = make_results.trained_starts(summary(-4.0, 1.8))
    assert "prompttune's starts train to lower BLEU than PEFT's by more than two standard errors" in behind
    assert "within two standard errors" not in behind
    # The seed-0 starts beside the E2E rows of the same draw, which started from them.
    data = summary(-0.75, 1.8) | {
        "trained": [
            {"start": "prompttune", "seed": 0, "scores": {"greedy": {"bleu": 48.9}, "beam5": {"bleu": 55.84}}},
            {"start": "peft", "seed": 0, "scores": {"greedy": {"bleu": 51.0}, "beam5": {"bleu": 57.0}}},
            {"start": "peft", "seed": 1, "scores": {"greedy": {"bleu": 40.0}, "beam5": {"bleu": 41.0}}},
        ]
    }
    draws = [
        {"setting": {"seed": 1}, "rows": {"soft_prompt": _e2e_row(10.0, 11.0)}},
        {
            "setting": {"seed": 0},
            "rows": {"soft_prompt": _e2e_row(48.26, 56.77), "peft_prompt_tuning": _e2e_row(51.3, 56.52)},
        },
    ]
    text = make_results.trained_starts(data, draws)
    assert "`python -m benchmarks.llm_prompt_starts --train 2`" in text
    assert (
        "trained again here, prompttune's scores 48.90 greedy and 55.84 beam (its E2E row, trained by llm_e2e.py, "
        "48.26 and 56.77), peft's scores 51.00 greedy and 57.00 beam (its E2E row, trained by llm_e2e.py, "
        "51.30 and 56.52)."
    ) in text
    assert "40.00" not in text and "10.00" not in text  # other draws' rows are not this draw's


def test_a_library_with_fewer_trained_starts_is_shown_as_it_stands(make_results):
    assert make_results.start_spread({"mean": None, "sd": None, "count": 0}) == "none yet"
    assert make_results.start_spread({"mean": 48.9, "sd": None, "count": 1}) == "48.90 (1 start)"
    assert make_results.start_spread({"mean": 49.0, "sd": 1.5, "count": 2}) == "49.00 (sd 1.50, 2 starts)"


def test_an_e2e_report_names_every_option_that_differs_from_the_defaults(monkeypatch):
    """The command a results file gives reproduces its setting: the steps, seed and sizes that differ."""
    import importlib

    module = importlib.import_module("benchmarks.llm_e2e")
    setting = {
        "model": module.MODEL,
        "train_size": 2000,
        "dev_size": 50,
        "steps": 200,
        "batch_size": 8,
        "max_source_length": 64,
        "max_target_length": 64,
        "seed": 0,
    }
    assert "Command: `python -m benchmarks.llm_e2e` (" in module.markdown(setting, {})
    longer = module.markdown(setting | {"steps": 500, "seed": 1, "train_size": 500}, {}, "llm_e2e_500")
    assert (
        "Command: `python -m benchmarks.llm_e2e --train-size 500 --steps 500 --seed 1 --name llm_e2e_500` (" in longer
    )
