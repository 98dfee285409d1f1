"""``python -m bot``: read settings, set up logging, run the bot until SIGINT/SIGTERM.

``python -m bot doctor`` checks the setup instead, without serving (``bot.doctor_cli``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from dotenv import dotenv_values
from pydantic import ValidationError


def _environment_name(model: str, loc: tuple[str | int, ...]) -> str:
    """The environment variable behind a pydantic error location (``IMAGINE_RESOLUTION``)."""
    from bot.settings import BotSettings
    from engine import EngineSettings

    parts = [str(part) for part in loc]
    if parts and parts[0] == "engine" and len(parts) > 1:
        model, parts = EngineSettings.__name__, parts[1:]
    if not parts:
        return "settings"
    name, rest = parts[0], parts[1:]
    if model == EngineSettings.__name__:
        prefix = EngineSettings.model_config.get("env_prefix", "")
        field = name.lower().removeprefix(prefix.lower())
        env = f"{prefix}{field}".upper() if field in EngineSettings.model_fields else name.upper()
    else:
        field = BotSettings.model_fields.get(name)
        alias = field.validation_alias if field is not None else None
        # The first alias choice is the variable's documented name; an error may name either.
        env = alias.choices[0] if alias is not None else name.upper()
    return ".".join([env, *rest])


def _settings_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        name = _environment_name(exc.title, err["loc"])
        if name == "DISCORD_TOKEN" and err["type"] == "missing":
            return "DISCORD_TOKEN is not set: copy .env.example to .env and fill it in."
        problems.append(f"{name}: {err['msg']}")
    return "Bad setting: " + "; ".join(problems)


def _export_hub_settings(env_file: Path = Path(".env")) -> None:
    """Make ``HF_*`` keys from ``.env`` (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``...) take effect.

    huggingface_hub reads them from the process environment when it is first imported, and
    pydantic-settings reads ``.env`` without exporting it; so copy them over before anything
    imports the hub client. The environment wins over ``.env``, as for every other setting.
    """
    if not env_file.is_file():
        return
    for key, value in dotenv_values(env_file).items():
        if key.startswith("HF_") and value is not None:
            os.environ.setdefault(key, value)


def _startup_error(exc: BaseException, settings) -> str | None:
    """One readable line for the failures an operator can fix; None for real bugs."""
    import aiohttp
    import discord

    from engine import EngineError
    from engine.web_listener import ListenError

    if isinstance(exc, ListenError):  # an OSError, but not Discord's
        return str(exc.strerror)
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


def _settings():
    """The bot's settings, with discord.py pointed at their Discord; None (after printing
    why) when they cannot be read."""
    from bot.client import point_discord_py_at
    from bot.settings import BotSettings

    try:
        settings = BotSettings()
    except ValidationError as exc:
        print(_settings_error(exc), file=sys.stderr)
        return None
    point_discord_py_at(settings.discord_api_base, settings.discord_gateway_url)
    return settings


async def _run() -> int:
    from bot.client import create_bot

    settings = _settings()
    if settings is None:
        return 2
    bot = create_bot(settings)
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
        if not settings.uses_workers:  # with workers, the GPU is theirs: no model here
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
    return bot.exit_code  # 3 when the generation watchdog stopped the bot


async def _doctor() -> int:
    """``python -m bot doctor``: check the setup without serving (``bot.doctor_cli``)."""
    from bot.doctor_cli import run_doctor

    settings = _settings()
    if settings is None:
        return 2
    return await run_doctor(settings, sys.stdout)


def _exit(code: int) -> None:
    from bot.client import EXIT_GPU_STUCK

    if code == EXIT_GPU_STUCK:
        # The stuck GPU thread cannot be joined, and interpreter exit would wait for it
        # forever: leave at once (everything is already stored and logged).
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def main() -> None:
    doctor = sys.argv[1:] == ["doctor"]
    logging.basicConfig(
        level=logging.WARNING if doctor else logging.INFO,  # the doctor prints its own lines
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    logging.getLogger("discord").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # huggingface_hub logs each request
    _export_hub_settings()  # first: nothing may import huggingface_hub before this
    _exit(asyncio.run(_doctor() if doctor else _run()))


if __name__ == "__main__":
    main()
