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


async def _run() -> int:
    from bot.client import ImagineBot, point_discord_py_at
    from bot.settings import BotSettings
    from engine import EngineError

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
    runner = asyncio.create_task(bot.start(settings.discord_token.get_secret_value()))
    waiter = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # re-raise start-up errors
    except EngineError as exc:
        print(f"Engine could not start: {exc.user_message}", file=sys.stderr)
        return 1
    except Exception as exc:  # the one place a start-up failure becomes one readable line
        import discord

        if isinstance(exc, discord.LoginFailure):
            print(
                "Discord refused the token (DISCORD_TOKEN is wrong or was reset).", file=sys.stderr
            )
            return 1
        if isinstance(exc, discord.PrivilegedIntentsRequired):
            print(
                "Enable the Message Content intent in the Developer Portal, or turn it off "
                "in the settings.",
                file=sys.stderr,
            )
            return 1
        raise
    finally:
        waiter.cancel()
        if not bot.is_closed():
            await bot.close()  # finishes the running batch first
        if not runner.done():
            await asyncio.gather(runner, return_exceptions=True)
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
