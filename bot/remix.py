"""The Remix form: a modal pre-filled with a shared set's prompt, its negative prompt and a
seed choice. It only collects the answer; ``ImagineBot.on_remix_submit`` acts on it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord

from bot.i18n import t
from lifecycle.storage import Job

if TYPE_CHECKING:
    from bot.client import ImagineBot

#: Discord's longest text input value.
INPUT_LIMIT = 4000
#: An open form is answered within the interaction token's life, or not at all.
FORM_TIMEOUT_S = 15 * 60
NEW_SEEDS = "new"
SAME_SEED = "same"


@dataclass(frozen=True)
class RemixForm:
    """What the clicker submitted."""

    prompt: str
    negative_prompt: str
    same_seed: bool


class RemixModal(discord.ui.Modal):
    """Asks for the remix's prompt, negative prompt and whether to keep the original seed."""

    def __init__(self, job: Job, locale: discord.Locale | str | None = None):
        super().__init__(
            title=t("remix_title", locale),
            timeout=FORM_TIMEOUT_S,
            custom_id=f"imagine:remix-form:{job.id}",
        )
        self.job_id = job.id
        self.prompt = discord.ui.TextInput(
            custom_id="prompt",
            style=discord.TextStyle.paragraph,
            default=job.prompt[:INPUT_LIMIT],
            max_length=INPUT_LIMIT,
            required=True,
        )
        self.negative_prompt = discord.ui.TextInput(
            custom_id="negative_prompt",
            style=discord.TextStyle.paragraph,
            default=job.negative_prompt[:INPUT_LIMIT] or None,
            max_length=INPUT_LIMIT,
            required=False,
        )
        self.seed = discord.ui.Select(
            custom_id="seed",
            options=[
                discord.SelectOption(
                    label=t("remix_new_seeds", locale),
                    value=NEW_SEEDS,
                    default=True,
                    description=t("remix_new_seeds_hint", locale),
                ),
                discord.SelectOption(
                    label=t("remix_same_seed", locale, seed=job.seed),
                    value=SAME_SEED,
                    description=t("remix_same_seed_hint", locale),
                ),
            ],
        )
        self.add_item(discord.ui.Label(text=t("remix_prompt", locale), component=self.prompt))
        self.add_item(
            discord.ui.Label(text=t("remix_negative", locale), component=self.negative_prompt)
        )
        self.add_item(discord.ui.Label(text=t("remix_seed", locale), component=self.seed))

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        form = RemixForm(
            prompt=self.prompt.value or "",
            negative_prompt=self.negative_prompt.value or "",
            same_seed=list(self.seed.values) == [SAME_SEED],
        )
        bot: ImagineBot = interaction.client
        await bot.on_remix_submit(interaction, self.job_id, form)
