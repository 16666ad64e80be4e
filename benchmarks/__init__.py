"""prompttune's benchmarks: each module is one benchmark, run from the repository's root as
`python -m benchmarks.NAME` (`--help` for its options), that writes `results/NAME.json` and
`results/NAME.md` with the command that made them; `python -m benchmarks.make_results` joins them
into `RESULTS.md`. What several benchmarks share is in `common` (data subsets, results, devices) and
`peft_loop` (PEFT's models and the training loop they are compared with)."""
