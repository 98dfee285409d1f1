"""Loading optional models (translator, safety classifier, preview VAE) without hub stalls.

transformers and diffusers retry every file of a model for about 25 s each when the Hugging
Face Hub cannot be reached (five retries with back-off), so one missing model holds a start-up
for minutes; offline, a missing tokenizer even ends in a ``TypeError``. ``load_pretrained``
avoids both: a local folder or a model already in the hub cache loads with no request at all,
and otherwise one quick request without retries (``HF_HUB_ETAG_TIMEOUT``, 10 s by default)
checks that the hub at ``HF_ENDPOINT`` answers before anything is downloaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from engine.errors import ModelNotFound

T = TypeVar("T")

# transformers builds a model on the meta device by patching how torch modules are made, for
# the whole process: two from_pretrained calls in two threads at once can leave one model with
# meta tensors ("Cannot copy out of meta tensor"). The optional models load in threads of their
# own (the bot's start-up), so they load one at a time.
_LOADING = threading.Lock()

# Every model these loaders read has one; asking for it tells "no such repo" from "hub down".
_PROBE_FILE = "config.json"


class HubUnavailable(Exception):
    """The model is not on disk and cannot be fetched from the hub now (the reason is the text)."""


def load_pretrained(name: str, load: Callable[[bool], T]) -> T:
    """Load a model from a local folder, the hub cache, or the hub, in that order; one model
    at a time in the process.

    Args:
        name: a local folder or a hub id.
        load: ``load(local_files_only)`` calls the library's ``from_pretrained``.

    Returns:
        What ``load`` returns.

    Raises:
        HubUnavailable: not on disk, and the hub is off (``HF_HUB_OFFLINE``) or does not answer.
        Exception: whatever ``load`` raises for a local folder or once the hub answered.
    """
    with _LOADING:
        return _load_pretrained(name, load)


def _load_pretrained(name: str, load: Callable[[bool], T]) -> T:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name).expanduser().exists():
        return load(True)
    try:
        validate_repo_id(name)
    except HFValidationError as exc:
        raise HubUnavailable("no such folder, and it is not a Hugging Face Hub id") from exc
    try:
        return load(True)
    except Exception as exc:  # not (completely) in the cache; the libraries differ in how
        cache_miss = exc
    if constants.is_offline_mode():
        raise HubUnavailable(
            "it is not in the local hub cache and HF_HUB_OFFLINE is set, so nothing is downloaded"
        ) from cache_miss
    try:
        get_hf_file_metadata(hf_hub_url(name, _PROBE_FILE), retry_on_errors=False)
    except Exception as exc:  # network errors, HTTP errors, timeouts: all mean "not now"
        raise HubUnavailable(
            f"it is not in the local hub cache and {constants.ENDPOINT} did not provide it: "
            f"{describe(exc)}"
        ) from exc
    return load(False)


def load_optional(name: str, load: Callable[[bool], T], *, what: str, setting: str, off: str) -> T:
    """``load_pretrained`` for an optional model (translator, safety classifier, captioner):
    whatever stops it (offline, hub down, a wrong id, broken files) is one ``ModelNotFound``
    saying what to do: ``"The {what} '{name}' could not be loaded (why). Download it, point
    {setting} at a local copy, or set {setting}= to {off}."``"""
    try:
        return load_pretrained(name, load)
    except Exception as exc:
        raise ModelNotFound(
            f"The {what} '{name}' could not be loaded ({describe(exc).rstrip('.')}). Download "
            f"it, point {setting} at a local copy, or set {setting}= to {off}."
        ) from exc


def describe(exc: BaseException, limit: int = 200) -> str:
    """``"ErrorType: first line of the message"``, for a one-line log or error message."""
    lines = str(exc).strip().splitlines()
    if isinstance(exc, HubUnavailable):
        line = lines[0]
    else:
        line = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"
