"""Silence, around the code that triggers them, third-party deprecation warnings a dapo-trl user cannot act on.

TRL 1.16 still calls transformers' `gradient_checkpointing*` names, which transformers 5.2x deprecates in favour of
`activation_checkpointing*` (a `FutureWarning` on every run, printed over the progress bar). The user never wrote
those names; the fix belongs in TRL. [`known_warnings_quiet`] ignores exactly these messages while the wrapped block
runs (`DAPOConfig.__post_init__`, `DAPOTrainer.__init__` and `DAPOTrainer.train`); any other warning, and the same
warnings raised by the user's own code outside these blocks, still show.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager


__all__ = ["KNOWN_WARNINGS", "known_warnings_quiet"]

# (category, regex matched against the start of the message)
KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (FutureWarning, r"`(is_)?gradient_checkpointing(_kwargs|_enable|_disable)?` is deprecated"),
)


@contextmanager
def known_warnings_quiet() -> Iterator[None]:
    """Ignore [`KNOWN_WARNINGS`] inside the block; every other warning is shown as usual."""
    with warnings.catch_warnings():
        for category, message in KNOWN_WARNINGS:
            warnings.filterwarnings("ignore", message=message, category=category)
        yield
