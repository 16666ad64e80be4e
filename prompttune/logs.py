"""What the libraries under prompttune print: only their errors (no progress bars, no warnings a
user of prompttune cannot act on)."""

from __future__ import annotations

import os


def quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
