"""The Discord stand-in against the real discord.py client: a small bot driven end to end."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from discord_standin import DiscordStandin, MessageType, Perm, StandinTimeout
from PIL import Image

pytestmark = pytest.mark.timeout(30)


def png(color: tuple[int, int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 8), color).save(buffer, format="PNG")
    return buffer.getvalue()


PNG_A, PNG_B = png((255, 0, 0)), png((0, 0, 255))


class Reroll(discord.ui.DynamicItem[discord.ui.Button], template=r"imagine:reroll:(?P<job>\d+)"):
    """A persistent button: it works from its custom_id alone, as after a restart."""

    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Re-roll", custom_id=f"imagine:reroll:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button, match: re.Match[str]
    ) -> Reroll:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        interaction.client.clicks.append((self.job, interaction.user.id))
        await interaction.response.send_message(f"re-rolling job {self.job}", ephemeral=True)


class StandinTestBot(commands.Bot):
    def __init__(self) -> None:
        super().__init__(
            command_prefix="!",
            intents=discord.Intents.default(),  # no members, no message content
            chunk_guilds_at_startup=False,
            guild_ready_timeout=0.05,
        )
        self.clicks: list[tuple[int, int]] = []
        self.user_messages: asyncio.Queue[discord.Message] = asyncio.Queue()
        self.release = asyncio.Event()  # lets a test expire a token while a command waits
        self.outcome: asyncio.Future[BaseException | None] = (
            asyncio.get_running_loop().create_future()
        )

    async def setup_hook(self) -> None:
        self.add_dynamic_items(Reroll)
        self.tree.add_command(imagine)
        self.tree.add_command(slow)
        self.tree.add_command(late)
        await self.tree.sync()

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        self.user_messages.put_nowait(message)
        if message.reference is not None:
            await message.reply(f"again: {message.content}")


@app_commands.command(description="Four images from a prompt")
@app_commands.describe(prompt="what to draw", seed="fixed seed")
async def imagine(interaction: discord.Interaction, prompt: str, seed: int = 0) -> None:
    await interaction.response.defer(thinking=True)
    files = [discord.File(io.BytesIO(PNG_A), "a.png"), discord.File(io.BytesIO(PNG_B), "b.png")]
    view = discord.ui.View(timeout=None)
    view.add_item(Reroll(seed))
    await interaction.followup.send(f"**{prompt}** seed {seed}", files=files, view=view)


@app_commands.command(description="Answers after the test says so")
async def slow(interaction: discord.Interaction) -> None:
    bot: StandinTestBot = interaction.client  # type: ignore[assignment]
    await interaction.response.defer()
    await bot.release.wait()
    try:
        await interaction.followup.send("finally")
    except discord.HTTPException as error:
        bot.outcome.set_result(error)
    else:
        bot.outcome.set_result(None)


@app_commands.command(description="Acknowledges too late")
async def late(interaction: discord.Interaction) -> None:
    bot: StandinTestBot = interaction.client  # type: ignore[assignment]
    await asyncio.sleep(0.3)
    try:
        await interaction.response.send_message("too late")
    except discord.HTTPException as error:
        bot.outcome.set_result(error)


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandin]:
    server = DiscordStandin(ack_deadline=0.25)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def point_discord_at(standin: DiscordStandin) -> Callable[[], None]:
    """Point discord.py at the stand-in for this test; restored afterwards."""
    old_base = discord.http.Route.BASE
    old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = standin.api_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(standin.gateway_url)
    yield
    discord.http.Route.BASE = old_base
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway


@asynccontextmanager
async def running(bot: commands.Bot, standin: DiscordStandin) -> AsyncIterator[commands.Bot]:
    """Run `bot` against the stand-in until ready; always close it and await its task."""
    task = asyncio.create_task(bot.start(standin.token))
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait({task, ready}, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            task.result()  # raises what stopped the bot
        assert ready.done(), "the bot did not become ready within 5 s"
        yield bot
    finally:
        await bot.close()
        await asyncio.gather(task, return_exceptions=True)


@pytest.fixture
def world(standin: DiscordStandin) -> dict:
    guild = standin.add_guild(name="Test guild")
    return {
        "guild": guild,
        "general": standin.add_channel(guild, "general"),
        "alice": standin.add_user("alice"),
        "mod": standin.add_user("mod", permissions=Perm.MANAGE_MESSAGES),
    }


async def test_slash_command_defer_followup_click_and_reply(standin, point_discord_at, world):
    alice, general = world["alice"], world["general"]
    async with running(StandinTestBot(), standin) as bot:
        commands_ = await standin.wait_for_commands()
        by_name = {c["name"]: c for c in commands_}
        assert set(by_name) == {"imagine", "slow", "late"}
        options = {o["name"]: o for o in by_name["imagine"]["options"]}
        assert options["prompt"]["type"] == 3 and options["prompt"]["required"]
        assert options["seed"]["type"] == 4 and not options["seed"].get("required")

        ix = await standin.slash_command(alice, general, "imagine", {"prompt": "a cat", "seed": 42})
        await ix.wait_ack(3)
        assert ix.ack_type == 5 and ix.ack_latency < 3

        msg = await ix.wait_response(5)
        # Discord fills the "thinking" message with the first follow-up after a defer.
        assert msg is ix.original and not msg.loading and not msg.ephemeral
        assert msg.content == "**a cat** seed 42"
        assert msg.type == MessageType.CHAT_INPUT_COMMAND
        assert [a.filename for a in msg.attachments] == ["a.png", "b.png"]
        assert [a.data for a in msg.attachments] == [PNG_A, PNG_B]
        assert msg.attachments[0].content_type == "image/png"
        assert (msg.attachments[0].width, msg.attachments[0].height) == (16, 8)
        assert msg.attachments[1].image().getpixel((0, 0)) == (0, 0, 255)
        assert msg.custom_ids() == ["imagine:reroll:42"]
        followup = standin.requests_to("POST", "/webhooks/")[-1]
        assert [f.data for f in followup.files] == [PNG_A, PNG_B]
        # The bot can download what it posted (Attachment.read hits the stand-in's CDN).
        channel = bot.get_channel(general.id)
        fetched = await channel.fetch_message(msg.id)
        assert await fetched.attachments[0].read() == PNG_A

        click = await standin.click(alice, msg, "imagine:reroll:42")
        answer = await click.wait_response(3)
        assert bot.clicks == [(42, alice.id)]
        assert click.ack_type == 4 and answer.ephemeral and answer.content == "re-rolling job 42"
        assert answer not in standin.messages(general, include_ephemeral=False)

        reply = await standin.user_message(alice, general, "but blue", reply_to=msg)
        answer = await standin.wait_for_message(
            lambda m: m.author is standin.bot_user and m.reply_to_id == reply.id, timeout=3
        )
        assert answer.type == MessageType.REPLY and answer.reference["message_id"] == str(reply.id)
        # The reply pinged the bot, so it could read the content without the privileged intent.
        assert answer.content == "again: but blue"
        assert alice in answer.mentions  # discord.py's reply pings the author by default
    standin.assert_no_failed_requests()
    assert not standin.unknown_routes


async def test_without_a_mention_the_bot_sees_no_content(standin, point_discord_at, world):
    async with running(StandinTestBot(), standin) as bot:
        await standin.user_message(world["alice"], world["general"], "hello there")
        await standin.user_message(world["alice"], world["general"], "hi bot", mentions_bot=True)
        seen = [await asyncio.wait_for(bot.user_messages.get(), 2) for _ in range(2)]
    assert [m.content for m in seen] == ["", "hi bot"]


async def test_expired_token_and_deleted_message_fail_like_discord(
    standin, point_discord_at, world
):
    async with running(StandinTestBot(), standin) as bot:
        await standin.wait_for_commands()
        ix = await standin.slash_command(world["alice"], world["general"], "slow")
        await ix.wait_ack(3)
        standin.expire_token(ix)
        bot.release.set()
        error = await asyncio.wait_for(bot.outcome, 3)
        assert isinstance(error, discord.HTTPException)
        assert (error.status, error.code) == (401, 50027)

        channel = bot.get_channel(world["general"].id)
        sent = await channel.send("soon gone")
        await sent.delete()
        with pytest.raises(discord.NotFound) as deleted:
            await sent.edit(content="too late")
        assert deleted.value.code == 10008
        stored = standin.message_by_id(sent.id)
        assert stored is not None and stored.deleted and stored.content == "soon gone"


async def test_late_acknowledgement_is_refused_and_measured(standin, point_discord_at, world):
    async with running(StandinTestBot(), standin) as bot:
        await standin.wait_for_commands()
        ix = await standin.slash_command(world["alice"], world["general"], "late")
        error = await asyncio.wait_for(bot.outcome, 3)
        assert isinstance(error, discord.NotFound) and error.code == 10062
        assert ix.late_callbacks and ix.late_callbacks[0] >= 0.25
        with pytest.raises(AssertionError, match="past the deadline"):
            await ix.wait_ack(1)


async def test_limits_permissions_and_form_errors(standin, point_discord_at, world):
    small = standin.add_guild(name="Small", attachment_size_limit=1000)
    small_channel = standin.add_channel(small, "tiny")
    locked = standin.add_channel(
        world["guild"], "read-only", bot_permissions=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY
    )
    async with running(StandinTestBot(), standin) as bot:
        channel = bot.get_channel(small_channel.id)
        big = discord.File(io.BytesIO(b"\0" * 2000), "big.bin")
        with pytest.raises(discord.HTTPException) as too_large:
            await channel.send(file=big)
        assert (too_large.value.status, too_large.value.code) == (413, 40005)

        with pytest.raises(discord.HTTPException) as too_long:
            await channel.send("x" * 2001)
        assert too_long.value.code == 50035 and "content" in str(too_long.value)

        with pytest.raises(discord.Forbidden) as forbidden:
            await bot.get_channel(locked.id).send("hello")
        assert forbidden.value.code == 50013

        # A guild added while the bot is connected arrives as GUILD_CREATE.
        late_guild = standin.add_guild(name="Later")
        standin.add_channel(late_guild, "new")
        await bot.wait_for("guild_channel_create", timeout=2)
        assert [c.name for c in bot.get_guild(late_guild.id).text_channels] == ["new"]
    assert {r.status for r in standin.failed_requests} == {413, 400, 403}


async def test_resume_after_dropped_connection(standin, point_discord_at, world):
    async with running(StandinTestBot(), standin):
        await standin.wait_for_commands()
        await standin.drop_gateway()
        await standin.wait_for_resume(3)
        ix = await standin.slash_command(
            world["alice"], world["general"], "imagine", {"prompt": "x"}
        )
        msg = await ix.wait_response(3)
        assert len(msg.attachments) == 2
    assert standin.gateway.identify_count == 1


async def test_test_side_mistakes_fail_clearly(standin, point_discord_at, world):
    with pytest.raises(AssertionError, match="not connected"):
        await standin.slash_command(world["alice"], world["general"], "imagine", {"prompt": "x"})
    async with running(StandinTestBot(), standin):
        await standin.wait_for_commands()
        with pytest.raises(ValueError, match="no option 'promt'"):
            await standin.slash_command(world["alice"], world["general"], "imagine", {"promt": "x"})
        with pytest.raises(ValueError, match="required"):
            await standin.slash_command(world["alice"], world["general"], "imagine", {})
        with pytest.raises(AssertionError, match="not registered"):
            await standin.slash_command(world["alice"], world["general"], "paint", {})
        with pytest.raises(StandinTimeout, match="matching never"):
            await standin.wait_for_message(never, timeout=0.05)


def never(message: object) -> bool:  # named, so the timeout message says what it was
    return False
