"""The setup doctor against the stand-in: ``python -m bot doctor`` and start-up's checks.

A missing permission, a bad token and an unreachable Redis are each named with their fix; a
healthy setup passes. The Discord side is the real discord.py client against the stand-in; the
engine side the tiny model on the CPU.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import discord
import pytest
from pydantic import SecretStr

from bot.client import point_discord_py_at
from bot.doctor_cli import discord_checks, run_doctor
from engine.doctor import HubAccess
from lifecycle.storage import Storage
from tests.discord_standin import DEFAULT_BOT_PERMISSIONS, Perm
from tests.redis_support import free_port

REPO = Path(__file__).resolve().parents[2]
OFFLINE = HubAccess(offline=True, endpoint="http://127.0.0.1:9")  # never asked: offline


@pytest.fixture
def pointed(standin) -> Iterator[None]:
    """discord.py's REST and gateway at the stand-in (as ``python -m bot doctor`` does)."""
    old = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discord_py_at(standin.api_base, standin.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old


@pytest.fixture
def settings(bot_settings):
    """The e2e settings with a retention limit any test disk has room for."""
    return bot_settings.model_copy(update={"retention_max_gb": 0.01})


async def doctor(settings) -> tuple[int, list[str]]:
    out = io.StringIO()
    code = await run_doctor(settings, out, hub=OFFLINE)
    return code, out.getvalue().splitlines()


def line_of(lines: list[str], name: str) -> str:
    found = [line for line in lines if line[5:].startswith(f"{name}:")]
    assert len(found) == 1, (name, lines)
    return found[0]


async def set_showcase(settings, guild_id: int, channel_id: int) -> None:
    storage = await Storage.open(settings.database_path)
    try:
        await storage.update_guild_settings(guild_id, showcase_channel_id=channel_id)
    finally:
        await storage.close()


async def wait_for_log(caplog, text: str, timeout: float = 15.0) -> logging.LogRecord:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for record in caplog.records:
            if text in record.getMessage():
                return record
        await asyncio.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}: {[r.getMessage() for r in caplog.records]}")


async def test_a_healthy_setup_passes(bot_process, world, standin, settings, caplog):
    caplog.set_level(logging.INFO, logger="bot.doctor")
    await bot_process.start(settings)  # registers the commands, as every start does
    summary = await wait_for_log(caplog, "setup checks:")
    assert "0 problem(s)" in summary.getMessage()
    assert not [r for r in caplog.records if r.name == "bot.doctor" and r.levelno >= 30]
    await bot_process.stop()
    await set_showcase(settings, world.guild.id, world.showcase.id)

    code, lines = await doctor(settings)

    assert code == 0, lines
    assert line_of(lines, "token").startswith(f"ok   token: logged in as {standin.bot_user.name}")
    permissions = line_of(lines, "permissions in Test guild")
    assert permissions.startswith("ok") and "showcase #showcase" in permissions
    assert line_of(lines, "commands").startswith("ok")
    assert line_of(lines, "IMAGINE_MODEL").startswith("ok   IMAGINE_MODEL: local folder")
    # The only warning: the tiny model runs on the CPU.
    assert [line for line in lines[:-1] if not line.startswith("ok")] == [line_of(lines, "GPU")]
    assert line_of(lines, "GPU").startswith("warn GPU: IMAGINE_DEVICE=cpu")
    assert lines[-1].startswith(f"{len(lines) - 1} checks: serving can work")
    standin.assert_no_failed_requests()


async def test_a_missing_permission_is_named_with_its_fix(
    bot_process, world, standin, settings, caplog, pointed
):
    world.general.bot_permissions = int(DEFAULT_BOT_PERMISSIONS & ~Perm.ATTACH_FILES)
    world.showcase.bot_permissions = int(Perm.VIEW_CHANNEL | Perm.SEND_MESSAGES)
    hidden = standin.add_channel(world.guild, "staff", bot_permissions=0)
    caplog.set_level(logging.INFO, logger="bot.doctor")

    # Start-up: the same check on the gateway's cache, logged as a warning with its fix.
    await bot_process.start(settings)
    warning = await wait_for_log(caplog, "setup: warn permissions in #general")
    assert warning.levelno == logging.WARNING
    assert "missing Attach Files. Fix: give the bot's role" in warning.getMessage()
    await bot_process.stop()
    await set_showcase(settings, world.guild.id, world.showcase.id)

    checks = {c.name: c for c in await discord_checks(settings)}

    general = checks["permissions in #general (Test guild)"]
    assert general.line() == (
        "warn permissions in #general (Test guild): missing Attach Files. Fix: give the bot's "
        "role these permissions in Server Settings -> Roles, or allow them for the bot in the "
        "channel's settings (Edit Channel -> Permissions)"
    )
    showcase = checks["showcase #showcase (Test guild)"]
    assert "missing Attach Files, Embed Links, Read Message History" in showcase.detail
    assert "⭐ cannot post there" in showcase.detail and "Server Settings -> Roles" in showcase.fix
    unseen = checks["permissions in Test guild"]
    assert f"#{hidden.name}" in unseen.detail and "View Channels" in unseen.fix
    assert "permissions in #after-dark (Test guild)" not in checks  # that one is fine
    assert not any(c.failed for c in checks.values())  # the bot serves the other channels


async def test_a_bad_token_is_named_with_its_fix(standin, settings, tmp_path):
    standin.require_token = True
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "IMAGINE_"))},
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "DISCORD_TOKEN": "not-the-token",
        "DISCORD_API_BASE": standin.api_base,
        "DISCORD_GATEWAY_URL": standin.gateway_url,
        "IMAGINE_DATA_DIR": str(tmp_path / "data"),
        "IMAGINE_RETENTION_MAX_GB": "0.01",
        "IMAGINE_MODEL": settings.engine.model,
        "IMAGINE_LORA": settings.engine.lora,
        "IMAGINE_VAE": "",
        "IMAGINE_TRANSLATOR": "",
        "IMAGINE_DEVICE": "cpu",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "doctor",
        cwd=tmp_path,  # no .env
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    lines = stdout.decode().splitlines()

    assert process.returncode == 1, (lines, stderr.decode())
    assert line_of(lines, "token") == (
        "FAIL token: Discord refused DISCORD_TOKEN (wrong, or reset since). Fix: copy the token "
        "again (Developer Portal -> your application -> Bot -> Reset Token) into .env as "
        "DISCORD_TOKEN"
    )
    assert not [line for line in lines if line[5:].startswith("permissions")]  # not asked
    assert line_of(lines, "IMAGINE_MODEL").startswith("ok")  # the rest is still checked
    assert lines[-1].startswith("1 of ") and "serving cannot work" in lines[-1]
    assert "not-the-token" not in stdout.decode() + stderr.decode()
    assert "Traceback" not in stderr.decode()
    assert [r.path for r in standin.requests] == ["/users/@me"]  # one REST call


async def test_an_unreachable_redis_is_named_with_its_fix(standin, world, settings, pointed):
    port = free_port()  # nothing listens there
    redis_mode = settings.model_copy(
        update={"queue_url": SecretStr(f"redis://:hunter2@127.0.0.1:{port}/0")}
    )

    code, lines = await doctor(redis_mode)

    assert code == 1, lines
    redis = line_of(lines, "Redis")
    assert redis.startswith(f"FAIL Redis: cannot reach the Redis at 127.0.0.1:{port}/0 (")
    assert "Fix: start Redis there" in redis and "IMAGINE_QUEUE_URL" in redis
    assert "hunter2" not in "\n".join(lines)  # a URL's password is never shown
    assert not [line for line in lines if line[5:].startswith(("GPU", "IMAGINE_MODEL"))]
    assert not [line for line in lines if line[5:].startswith("GPU workers")]  # not asked


async def test_message_content_the_portal_refuses_is_a_failure(standin, world, settings, pointed):
    standin.application_flags = 1 << 23  # the portal's switches all off
    wants = settings.model_copy(update={"message_content_intent": True})

    checks = {c.name: c for c in await discord_checks(wants)}

    intents = checks["intents"]
    assert intents.failed
    assert "Privileged Gateway Intents -> Message Content" in intents.fix
    assert "IMAGINE_MESSAGE_CONTENT_INTENT=false" in intents.fix


async def test_a_bot_in_no_server_is_told_how_to_invite_it(standin, settings, pointed):
    checks = {c.name: c for c in await discord_checks(settings)}

    servers = checks["servers"]
    assert servers.status.value == "warn"
    assert f"client_id={standin.application_id}" in servers.fix
    assert "applications.commands" in servers.fix


async def test_ports_taken_fail(standin, world, settings, pointed):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gallery = settings.model_copy(update={"gallery_port": port, "gallery_host": "127.0.0.1"})
        code, lines = await doctor(gallery)

    assert code == 1
    line = line_of(lines, "IMAGINE_GALLERY_PORT")
    assert line.startswith(f"FAIL IMAGINE_GALLERY_PORT: cannot listen on 127.0.0.1:{port}")
    assert "choose another IMAGINE_GALLERY_PORT (0 = off)" in line
    assert line_of(lines, "IMAGINE_METRICS_PORT") == "ok   IMAGINE_METRICS_PORT: off"
