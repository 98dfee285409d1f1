"""The bot's one typed settings object, read from the environment and ``.env`` once."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine import EngineSettings
from engine.streams import check_queue_url

DISCORD_API_BASE = "https://discord.com/api/v10"
DISCORD_GATEWAY_URL = "wss://gateway.discord.gg/"


class BotSettings(BaseSettings):
    """Everything the bot reads from the environment (engine settings nested under ``engine``)."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", populate_by_name=True)

    discord_token: SecretStr = Field(
        validation_alias=AliasChoices("DISCORD_TOKEN", "discord_token")
    )
    discord_api_base: str = Field(
        DISCORD_API_BASE, validation_alias=AliasChoices("DISCORD_API_BASE", "discord_api_base")
    )
    discord_gateway_url: str = Field(
        DISCORD_GATEWAY_URL,
        validation_alias=AliasChoices("DISCORD_GATEWAY_URL", "discord_gateway_url"),
    )
    data_dir: Path = Field(
        Path("./data"), validation_alias=AliasChoices("IMAGINE_DATA_DIR", "data_dir")
    )
    queue_max_jobs: int = Field(
        100, ge=1, validation_alias=AliasChoices("IMAGINE_QUEUE_MAX_JOBS", "queue_max_jobs")
    )
    queue_per_user: int = Field(
        3, ge=1, validation_alias=AliasChoices("IMAGINE_QUEUE_PER_USER", "queue_per_user")
    )
    max_prompts: int = Field(
        4, ge=1, le=25, validation_alias=AliasChoices("IMAGINE_MAX_PROMPTS", "max_prompts")
    )  # most prompts one /imagine makes: permutations {a, b} times --repeat
    sync_guild_id: int | None = Field(
        None, validation_alias=AliasChoices("IMAGINE_SYNC_GUILD_ID", "sync_guild_id")
    )
    message_content_intent: bool = Field(
        False,
        validation_alias=AliasChoices("IMAGINE_MESSAGE_CONTENT_INTENT", "message_content_intent"),
    )
    retention_days: float = Field(
        30.0, ge=0, validation_alias=AliasChoices("IMAGINE_RETENTION_DAYS", "retention_days")
    )
    retention_max_gb: float = Field(
        20.0, ge=0, validation_alias=AliasChoices("IMAGINE_RETENTION_MAX_GB", "retention_max_gb")
    )
    generation_timeout: float = Field(
        300.0,
        ge=1,
        validation_alias=AliasChoices("IMAGINE_GENERATION_TIMEOUT", "generation_timeout"),
    )
    metrics_port: int = Field(
        0, ge=0, le=65535, validation_alias=AliasChoices("IMAGINE_METRICS_PORT", "metrics_port")
    )
    metrics_host: str = Field(
        "127.0.0.1", validation_alias=AliasChoices("IMAGINE_METRICS_HOST", "metrics_host")
    )
    gallery_port: int = Field(
        0, ge=0, le=65535, validation_alias=AliasChoices("IMAGINE_GALLERY_PORT", "gallery_port")
    )
    gallery_host: str = Field(
        "0.0.0.0", validation_alias=AliasChoices("IMAGINE_GALLERY_HOST", "gallery_host")
    )
    gallery_url: str = Field(
        "", validation_alias=AliasChoices("IMAGINE_GALLERY_URL", "gallery_url")
    )
    auto_shard: bool = Field(
        False, validation_alias=AliasChoices("IMAGINE_AUTO_SHARD", "auto_shard")
    )
    queue_url: SecretStr = Field(
        SecretStr(""), validation_alias=AliasChoices("IMAGINE_QUEUE_URL", "queue_url")
    )
    queue_prefix: str = Field(
        "imagine", validation_alias=AliasChoices("IMAGINE_QUEUE_PREFIX", "queue_prefix")
    )
    engine: EngineSettings = Field(default_factory=EngineSettings)

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: SecretStr) -> SecretStr:
        check_queue_url(value.get_secret_value())
        return value

    @property
    def uses_workers(self) -> bool:
        """Whether GPU workers do the generating (``IMAGINE_QUEUE_URL`` is set): then this
        process loads no image model."""
        return bool(self.queue_url.get_secret_value())

    @property
    def gallery_enabled(self) -> bool:
        """Whether this bot serves server galleries (``IMAGINE_GALLERY_PORT`` is set)."""
        return self.gallery_port > 0

    def gallery_address(self, slug: str) -> str:
        """The public address of the gallery with ``slug``: under ``IMAGINE_GALLERY_URL``, or
        ``http://localhost:<port>`` when that is not set."""
        base = self.gallery_url.rstrip("/") or f"http://localhost:{self.gallery_port}"
        return f"{base}/g/{slug}/"

    @property
    def thumbnails_dir(self) -> Path:
        return self.data_dir / "thumbnails"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "imagine.sqlite3"

    @property
    def images_dir(self) -> Path:
        return self.data_dir / "images"

    @property
    def retention_max_age_s(self) -> float | None:
        """Age after which unshared result sets are removed; ``None`` = keep forever."""
        return self.retention_days * 86400 if self.retention_days > 0 else None

    @property
    def retention_max_bytes(self) -> int | None:
        """Most bytes of result files kept (1 GB = 10**9 bytes); ``None`` = no size limit."""
        return int(self.retention_max_gb * 1e9) if self.retention_max_gb > 0 else None
