"""Keep third-party chatter (progress bars, backend notices) out of attnstore's own output."""

from __future__ import annotations

import warnings


def quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # The Idefics3 torchvision backend is optional; the PIL backend gives the same pixels.
    warnings.filterwarnings("ignore", message=".*requires torchvision.*")
