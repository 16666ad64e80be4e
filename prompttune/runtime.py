"""Process-level settings, imported without torch: what the libraries under prompttune print (only
their errors: no progress bars, no warnings a user of prompttune cannot act on), and which process
of a distributed run is the main one."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def is_main_process() -> bool:
    """Rank 0 of a run started by `accelerate launch` or `torchrun` (or a plain single process)."""
    return int(os.environ.get("RANK", "0")) == 0
