"""The Discord stand-in against the real discord.py client: a small bot driven end to end."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import aiohttp
import discord
import pytest
import yarl
from discord import app_commands
from discord.ext import commands
from PIL import Image

from tests.discord_standin import DiscordStandin, MessageFlag, MessageType, Perm, StandinTimeout

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
    def __init__(self, intents: discord.Intents | None = None) -> None:
        super().__init__(
            command_prefix="!",
            intents=intents or discord.Intents.default(),  # no members, no message content
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
        for command in (panel, describe, whoami, settings, style, info, gallery, profile):
            self.tree.add_command(command)
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


class Panel(discord.ui.View):
    """Non-persistent view: routed by message id, so the callback response must carry it."""

    def __init__(self) -> None:
        super().__init__(timeout=30)

    @discord.ui.button(label="Keep first", custom_id="panel:keep")
    async def keep(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        await interaction.response.defer()  # type 6 on a component
        first = interaction.message.attachments[0]
        new = discord.File(io.BytesIO(PNG_B), "new.png")
        await interaction.edit_original_response(content="kept", attachments=[first, new])

    @discord.ui.select(
        custom_id="panel:size", options=[discord.SelectOption(label=s) for s in "SML"]
    )
    async def size(self, interaction: discord.Interaction, select: discord.ui.Select) -> None:
        await interaction.response.edit_message(content=f"size {select.values[0]}", view=None)


@app_commands.command(description="A message with a non-persistent view")
async def panel(interaction: discord.Interaction) -> None:
    files = [discord.File(io.BytesIO(PNG_A), "a.png"), discord.File(io.BytesIO(PNG_B), "b.png")]
    await interaction.response.send_message("panel", files=files, view=Panel())


@app_commands.command(description="Attachment and channel options")
async def describe(
    interaction: discord.Interaction, image: discord.Attachment, where: discord.TextChannel
) -> None:
    data = await image.read()
    await interaction.response.send_message(f"{image.filename}: {len(data)} bytes", ephemeral=True)
    await where.send(
        f"showcase from {interaction.user.name}",
        file=discord.File(io.BytesIO(data), image.filename),
    )


@app_commands.command(description="Permissions and locale as the bot sees them")
@app_commands.guild_only()
async def whoami(interaction: discord.Interaction) -> None:
    p, app = interaction.permissions, interaction.app_permissions
    await interaction.response.send_message(
        f"manage_messages={p.manage_messages} manage_guild={p.manage_guild} "
        f"attach_files={app.attach_files} locale={interaction.locale.value} "
        f"limit={interaction.filesize_limit}"
    )


class StyleModal(discord.ui.Modal, title="Style"):
    name = discord.ui.TextInput(label="Style name", custom_id="style-name")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"style={self.name.value}")


@app_commands.command(description="Opens a modal")
async def settings(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(StyleModal())


@app_commands.command(description="Autocompleted option")
async def style(interaction: discord.Interaction, name: str) -> None:
    await interaction.response.send_message(name)


@style.autocomplete("name")
async def style_names(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    return [
        app_commands.Choice(name=n, value=n) for n in ("photo", "painting") if n.startswith(current)
    ]


@app_commands.context_menu(name="Imagine info")
async def info(interaction: discord.Interaction, message: discord.Message) -> None:
    await interaction.response.send_message(f"{len(message.attachments)} files", ephemeral=True)


@app_commands.context_menu(name="Imagine profile")
async def profile(interaction: discord.Interaction, member: discord.Member) -> None:
    await interaction.response.send_message(f"profile of {member.name}", ephemeral=True)


@app_commands.command(description="Components v2: a media gallery of the uploaded files")
async def gallery(interaction: discord.Interaction) -> None:
    view = discord.ui.LayoutView()
    view.add_item(
        discord.ui.MediaGallery(
            discord.MediaGalleryItem("attachment://a.png"),
            discord.MediaGalleryItem("attachment://b.png", spoiler=True),
        )
    )
    view.add_item(discord.ui.ActionRow(Reroll(7)))
    files = [discord.File(io.BytesIO(PNG_A), "a.png"), discord.File(io.BytesIO(PNG_B), "b.png")]
    await interaction.response.send_message(files=files, view=view)


@pytest.fixture
async def standin() -> AsyncIterator[DiscordStandin]:
    server = DiscordStandin()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
def point_discord_at(standin: DiscordStandin) -> Iterator[None]:
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
        assert {"imagine", "slow", "late", "Imagine info"} <= set(by_name)
        assert by_name["Imagine info"]["type"] == 3
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
    standin.ack_deadline = 0.1  # /late answers after 0.3 s
    async with running(StandinTestBot(), standin) as bot:
        await standin.wait_for_commands()
        ix = await standin.slash_command(world["alice"], world["general"], "late")
        error = await asyncio.wait_for(bot.outcome, 3)
        assert isinstance(error, discord.NotFound) and error.code == 10062
        assert ix.late_callbacks and ix.late_callbacks[0] >= 0.3
        with pytest.raises(AssertionError, match="past the deadline"):
            await ix.wait_ack(1)


async def test_limits_permissions_and_form_errors(standin, point_discord_at, world):
    small = standin.add_guild(name="Small", attachment_size_limit=1000)
    small_channel = standin.add_channel(small, "tiny")
    roomy_channel = standin.add_channel(standin.add_guild("Boosted", attachment_size_limit=2**26))
    locked = standin.add_channel(
        world["guild"], "read-only", bot_permissions=Perm.VIEW_CHANNEL | Perm.READ_MESSAGE_HISTORY
    )
    async with running(StandinTestBot(), standin) as bot:
        channel = bot.get_channel(small_channel.id)
        big = discord.File(io.BytesIO(b"\0" * 2000), "big.bin")
        with pytest.raises(discord.HTTPException) as too_large:
            await channel.send(file=big)
        assert (too_large.value.status, too_large.value.code) == (413, 40005)

        roomy = bot.get_channel(roomy_channel.id)  # 64 MiB per file, but 25 MiB per request
        halves = [discord.File(io.BytesIO(bytes(13 * 2**20)), f"{i}.bin") for i in range(2)]
        with pytest.raises(discord.HTTPException) as whole_body:
            await roomy.send(files=halves)
        assert (whole_body.value.status, whole_body.value.code) == (413, 40005)

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


async def test_components_update_and_attachment_keeping_edit(standin, point_discord_at, world):
    alice, general = world["alice"], world["general"]
    async with running(StandinTestBot(), standin):
        await standin.wait_for_commands()
        ix = await standin.slash_command(alice, general, "panel")
        msg = await ix.wait_response(3)
        assert ix.ack_type == 4 and [a.data for a in msg.attachments] == [PNG_A, PNG_B]
        first_id = msg.attachments[0].id

        keep = await standin.click(alice, msg, "panel:keep")
        edited = await keep.wait_response(3)
        assert keep.ack_type == 6 and edited is msg and msg.content == "kept"
        # `attachments` in the PATCH kept the first (by id) and added the new upload.
        assert msg.attachments[0].id == first_id
        assert [(a.filename, a.data) for a in msg.attachments] == [
            ("a.png", PNG_A),
            ("new.png", PNG_B),
        ]
        assert len(msg.revisions) == 2 and msg.revisions[0]["content"] == "panel"

        pick = await standin.select(alice, msg, "panel:size", ["M"])
        await pick.wait_response(3)
        assert pick.ack_type == 7 and msg.content == "size M" and msg.components == []

        v2 = await (await standin.slash_command(alice, general, "gallery")).wait_response(3)
        assert v2.flags & MessageFlag.IS_COMPONENTS_V2 and len(v2.attachments) == 2
        assert [c["type"] for c in v2.components] == [12, 1]
        assert v2.custom_ids() == ["imagine:reroll:7"]
        assert (
            await (await standin.click(alice, v2, "imagine:reroll:7")).wait_response(3)
        ).ephemeral

        menu = await standin.context_menu(alice, msg, "Imagine info")
        answer = await menu.wait_response(3)
        assert answer.content == "2 files" and answer.ephemeral
        assert answer.type == MessageType.CONTEXT_MENU_COMMAND
    standin.assert_no_failed_requests()


async def test_options_permissions_modal_and_autocomplete(standin, point_discord_at, world):
    alice, mod, general = world["alice"], world["mod"], world["general"]
    showcase = standin.add_channel(world["guild"], "showcase")
    async with running(StandinTestBot(), standin):
        await standin.wait_for_commands()
        ix = await standin.slash_command(
            alice, general, "describe", {"image": ("cat.png", PNG_A), "where": showcase}
        )
        answer = await ix.wait_response(3)
        assert answer.content == f"cat.png: {len(PNG_A)} bytes"
        posted = await standin.wait_for_message(lambda m: m.channel is showcase, timeout=3)
        assert posted.attachments[0].data == PNG_A and posted.content == "showcase from alice"

        who = await standin.slash_command(mod, general, "whoami", locale="de")
        text = (await who.wait_response(3)).content
        assert text == (
            "manage_messages=True manage_guild=False attach_files=True locale=de "
            f"limit={10 * 2**20}"
        )
        plain = await (await standin.slash_command(alice, general, "whoami")).wait_response(3)
        assert plain.content.startswith("manage_messages=False")

        opened = await standin.slash_command(alice, general, "settings")
        await opened.wait_ack(3)
        assert opened.ack_type == 9 and opened.modal["title"] == "Style"
        submitted = await standin.submit_modal(alice, opened, {"style-name": "watercolor"})
        assert (await submitted.wait_response(3)).content == "style=watercolor"

        menu = await standin.context_menu(alice, mod, "Imagine profile", channel=general)
        assert (await menu.wait_response(3)).content == "profile of mod"

        typing = await standin.autocomplete(alice, general, "style", {"name": "pa"}, focused="name")
        await typing.wait_ack(3)
        assert typing.ack_type == 8 and typing.choices == [
            {"name": "painting", "value": "painting"}
        ]
    standin.assert_no_failed_requests()


async def test_ephemeral_defer_and_followups(standin, point_discord_at, world):
    """Raw API checks of the defer -> follow-up rules, through discord.py's webhook client."""
    alice, general = world["alice"], world["general"]
    seen: asyncio.Queue[discord.Interaction] = asyncio.Queue()

    class Bot(StandinTestBot):
        async def on_interaction(self, interaction: discord.Interaction) -> None:
            seen.put_nowait(interaction)

    async with running(Bot(), standin) as bot:
        await standin.wait_for_commands()
        ix = await standin.slash_command(alice, general, "slow")  # defers, then waits
        interaction = await asyncio.wait_for(seen.get(), 2)
        await ix.wait_ack(3)
        first = await interaction.followup.send("one", wait=True)
        second = await interaction.followup.send("two", ephemeral=True, wait=True)
        assert first.id == ix.original.id and ix.response is ix.original
        stored = standin.message_by_id(second.id)
        assert stored.ephemeral and stored.reply_to_id == first.id
        # A second callback is refused by the API (discord.py itself stops it earlier).
        async with aiohttp.ClientSession() as session:
            url = f"{standin.api_base}/interactions/{ix.id}/{ix.token}/callback"
            async with session.post(url, json={"type": 5}) as response:
                assert response.status == 400
                assert response.headers["Content-Type"] == "application/json"
                assert (await response.json())["code"] == 40060
        await interaction.delete_original_response()
        assert ix.original.deleted
        with pytest.raises(discord.NotFound) as gone:
            await interaction.edit_original_response(content="x")
        assert gone.value.code == 10008
        assert standin.gateway.connections[0].compress  # zlib-stream frames were used
        bot.release.set()  # let /slow finish rather than leave its task pending
        assert await asyncio.wait_for(bot.outcome, 2) is None


async def test_portal_settings_are_enforced(point_discord_at):
    """A disallowed privileged intent and a wrong token fail the way Discord makes them fail."""
    async with DiscordStandin(allowed_privileged_intents=0, require_token=True) as standin:
        discord.http.Route.BASE = standin.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(standin.gateway_url)
        wants_content = StandinTestBot(discord.Intents(guilds=True, message_content=True))
        with pytest.raises(discord.PrivilegedIntentsRequired):
            async with running(wants_content, standin):
                pass
        wrong_token = StandinTestBot()
        with pytest.raises(discord.LoginFailure):
            try:
                await wrong_token.start("not-the-token")
            finally:
                await wrong_token.close()


async def test_direct_messages(standin, point_discord_at, world):
    alice = world["alice"]
    async with running(StandinTestBot(), standin) as bot:
        await standin.wait_for_commands()
        dm = standin.add_dm_channel(alice)
        ix = await standin.slash_command(alice, dm, "imagine", {"prompt": "a lighthouse"})
        msg = await ix.wait_response(3)
        assert msg.channel is dm and msg.guild is None and len(msg.attachments) == 2
        with pytest.raises(ValueError, match="not available in DMs"):
            await standin.slash_command(alice, dm, "whoami")

        await standin.user_message(alice, dm, "hello")  # DMs are exempt from the content intent
        assert (await asyncio.wait_for(bot.user_messages.get(), 2)).content == "hello"

        user = await bot.fetch_user(alice.id)
        sent = await user.send("your images are ready")
        assert standin.message_by_id(sent.id).channel is standin.add_dm_channel(alice) is dm
    standin.assert_no_failed_requests()
