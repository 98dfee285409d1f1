"""The one error path: what a user is told when a command, a button or a reply fails."""

from __future__ import annotations

import logging

from discord import app_commands

from bot.i18n import t
from engine import EngineError
from lifecycle.service import JobRejected

log = logging.getLogger(__name__)


def explain(error: BaseException, locale: object, *, context: str) -> str:
    """The words for the user about ``error`` (in ``locale``).

    Errors meant for users (``EngineError``, ``JobRejected``) carry their own message; a failed
    command check says so; anything else is a bug: logged with its traceback under
    ``context`` (e.g. "command imagine"), and the user gets a generic apology.
    """
    original = getattr(error, "original", error)
    if isinstance(original, EngineError | JobRejected):
        return original.user_message
    if isinstance(error, app_commands.CheckFailure):
        return t("not_here", locale)
    log.error("%s failed", context, exc_info=original)
    return t("something_wrong", locale)
