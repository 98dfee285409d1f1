"""The one error path: what commands, buttons and replies tell the user when they fail."""

from __future__ import annotations

import logging

from discord import app_commands

from bot.errors import explain
from bot.i18n import t
from engine import InvalidRequest
from lifecycle.service import JobRejected


def test_errors_meant_for_users_keep_their_message_and_are_not_logged(caplog):
    with caplog.at_level(logging.ERROR):
        assert explain(InvalidRequest("The seed is too big."), "en-US", context="x") == (
            "The seed is too big."
        )
        assert explain(JobRejected("The queue is full."), "zh-CN", context="x") == (
            "The queue is full."
        )
    assert not caplog.records


def test_a_wrapped_error_is_unwrapped_like_discord_py_wraps_command_errors():
    wrapped = app_commands.CommandInvokeError.__new__(app_commands.CommandInvokeError)
    wrapped.original = JobRejected("Not in this channel.")
    assert explain(wrapped, None, context="command imagine") == "Not in this channel."


def test_a_failed_check_says_so_in_the_users_language():
    assert explain(app_commands.CheckFailure(), "zh-CN", context="x") == t("not_here", "zh-CN")


def test_a_bug_is_logged_with_its_traceback_and_the_user_gets_an_apology(caplog):
    with caplog.at_level(logging.ERROR, logger="bot.errors"):
        text = explain(RuntimeError("boom"), "en-US", context="button vary on job 3")
    assert text == t("something_wrong", "en-US")
    [record] = caplog.records
    assert "button vary on job 3 failed" in record.getMessage()
    assert record.exc_info and record.exc_info[0] is RuntimeError
