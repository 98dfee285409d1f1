"""``python -m bot``: read settings, set up logging, run the bot until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from pydantic import ValidationError


def _settings_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        name = ".".join(str(p) for p in err["loc"]) or "settings"
        if name.lower() == "discord_token" and err["type"] == "missing":
            return "DISCORD_TOKEN is not set: copy .env.example to .env and fill it in."
        problems.append(f"{name.upper()}: {err['msg']}")
    return "Bad setting: " + "; ".join(problems)


def _startup_error(exc: BaseException, settings) -> str | None:
    """One readable line for the failures an operator can fix; None for real bugs."""
    import aiohttp
    import discord

    from engine import EngineError

    if isinstance(exc, EngineError):
        return f"Engine could not start: {exc.user_message}"
    if isinstance(exc, discord.LoginFailure):
        return "Discord refused the token (DISCORD_TOKEN is wrong or was reset)."
    if isinstance(exc, discord.PrivilegedIntentsRequired):
        return (
            "Discord refused the Message Content intent: enable it in the Developer Portal "
            "(Bot -> Privileged Gateway Intents) or set IMAGINE_MESSAGE_CONTENT_INTENT=false."
        )
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return f"Cannot reach Discord at {settings.discord_api_base}: {exc}"
    return None


async def _run() -> int:
    from bot.client import ImagineBot, point_discord_py_at
    from bot.settings import BotSettings

    try:
        settings = BotSettings()
    except ValidationError as exc:
        print(_settings_error(exc), file=sys.stderr)
        return 2
    point_discord_py_at(settings.discord_api_base, settings.discord_gateway_url)
    bot = ImagineBot(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    runner: asyncio.Task | None = None
    waiter = asyncio.create_task(stop.wait())
    failure: str | None = None
    try:
        # Load the model before logging in: a missing model or too little GPU memory is
        # reported at once, without touching Discord.
        await bot.runner.start()
        runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
        await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # re-raise start-up errors
    except Exception as exc:  # the one place a start-up failure becomes one readable line
        failure = _startup_error(exc, settings)
        if failure is None:
            raise
    finally:
        waiter.cancel()
        if not bot.is_closed():
            await bot.close()  # finishes the running batch first
        if runner is not None and not runner.done():
            await asyncio.gather(runner, return_exceptions=True)
    if failure is not None:
        print(failure, file=sys.stderr)  # last, after the shutdown's log lines
        return 1
    return 0


def main() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("discord").setLevel(logging.WARNING)
    sys.exit(asyncio.run(_run()))


if __name__ == "__main__":
    main()
