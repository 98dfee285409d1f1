"""Keeps the gallery in step with Discord: what leaves it when sets or showcase posts go away."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence

from gallery.thumbnails import ThumbnailStore
from lifecycle.storage import Share, Storage

log = logging.getLogger(__name__)


class GalleryListing:
    """Unlists shares whose images were purged and forgets shares whose post was deleted;
    either way their thumbnails go too. It also makes a new share's thumbnails up front."""

    def __init__(self, storage: Storage, thumbnails: ThumbnailStore):
        self.storage = storage
        self.thumbnails = thumbnails

    async def images_purged(self, job_ids: Iterable[int]) -> list[Share]:
        """These jobs' stored images are gone (🗑 on the result, a retention purge): their
        shares leave the gallery. Returns the shares that were listed until now."""
        ids = sorted(set(job_ids))
        unlisted = await self.storage.unlist_shares(ids)
        for job_id in ids:
            await self.thumbnails.purge(job_id)
        if unlisted:
            log.info("gallery: unlisted %d share(s) of purged sets", len(unlisted))
        return unlisted

    async def post_deleted(self, showcase_message_id: int) -> Share | None:
        """A showcase post was deleted (🗑 on it, or a moderator in Discord): forget its share.

        Returns the share, or None when the message was not a showcase post.
        """
        share = await self.storage.remove_share_by_message(showcase_message_id)
        if share is None:
            return None
        if not await self.storage.shares_of_job(share.job_id):
            await self.thumbnails.purge(share.job_id)
        log.info("gallery: share of job %s removed with its showcase post", share.job_id)
        return share

    async def prepare(self, job_id: int, images: Sequence[tuple[int, bytes]]) -> None:
        """Make the thumbnails of a new share now, so the first visitor does not wait.

        ``images`` are ``(1-based index, encoded bytes)``. A failure is logged; the gallery
        makes a missing thumbnail when it is first asked for.
        """
        for index, data in images:
            try:
                await self.thumbnails.get(job_id, index, _given(data))
            except Exception:
                log.warning(
                    "gallery: thumbnail of job %s image %s failed", job_id, index, exc_info=True
                )


def _given(data: bytes) -> Callable[[], Awaitable[bytes]]:
    """A thumbnail source for bytes already at hand."""

    async def source() -> bytes:
        return data

    return source
