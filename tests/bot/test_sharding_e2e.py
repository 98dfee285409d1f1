"""IMAGINE_AUTO_SHARD: the bot runs discord.py's AutoShardedBot with the shards Discord says."""

from __future__ import annotations

from bot.client import ShardedImagineBot
from tests.bot.test_conversation_e2e import imagine


async def test_auto_sharded_bot_serves_guilds_on_every_shard(bot_process, standin, world):
    standin.recommended_shards = 2
    settings = bot_process.settings.model_copy(update={"auto_shard": True})
    # Guild events reach only the shard that owns the guild: (guild_id >> 22) % 2.
    channels = {}
    while len(channels) < 2:
        guild = standin.add_guild(name=f"guild {len(channels)}")
        channels.setdefault((guild.id >> 22) % 2, standin.add_channel(guild, name="general"))

    bot = await bot_process.start(settings)

    assert isinstance(bot, ShardedImagineBot)
    assert sorted(bot.shards) == [0, 1]
    shards = sorted(tuple(s.shard) for s in standin.gateway.live_sessions)
    assert shards == [(0, 2), (1, 2)]
    for shard in (0, 1):
        _, result = await imagine(standin, world.alice, channels[shard], prompt=f"shard {shard}")
        assert [a.data[:8] for a in result.attachments] == [b"\x89PNG\r\n\x1a\n"] * 4
