"""The gallery's web listener: one page per opted-in server, its thumbnails and full images.

Routes (``<slug>`` is the server's secret address part, shown to its admins):

- ``GET /g/<slug>/`` (``?page=N``): the page, newest share first.
- ``GET /g/<slug>/thumb/<job>-<index>.webp``: a thumbnail, made once.
- ``GET /g/<slug>/image/<job>-<index>``: the image as stored (PNG, WebP or JPEG).

Anything else, an unknown slug, a server whose gallery is off, and an image that is not listed
there all get the same 404, so the answer never tells whether a server exists. This listener is
the public one; the operator endpoints (``/metrics``, ``/healthz``) are never served here.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.web_listener import WebListener
from gallery.pages import PER_PAGE, card_for, page_count, render_page, shown_indexes
from gallery.thumbnails import ThumbnailStore
from lifecycle.storage import GalleryEntry, GuildSettings, Job, Storage

log = logging.getLogger(__name__)

LoadImage = Callable[[Job, int], Awaitable[tuple[str, bytes]]]  # -> (file name, bytes)

_SLUG = re.compile(r"[A-Za-z0-9_-]{16,64}", re.ASCII)
_PICTURE = re.compile(r"([0-9]{1,18})-([0-9]{1,2})", re.ASCII)
_PAGE = re.compile(r"[1-9][0-9]{0,8}", re.ASCII)
_TYPES = {".png": "image/png", ".webp": "image/webp", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}

#: Images never change under their address (a deleted one is simply gone): cache for a day.
IMAGE_CACHE = "public, max-age=86400"
#: The page changes with every share and deletion: always revalidate.
PAGE_CACHE = "no-cache"
_SECURITY_HEADERS = {
    # Nothing from elsewhere, no scripts at all; the inline <style> is the page's only CSS.
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    # Following a link to Discord must not hand over the page's secret address.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def message_link(guild_id: int | None, channel_id: int, message_id: int) -> str:
    """The Discord web link of a message (the showcase post)."""
    return f"https://discord.com/channels/{guild_id or '@me'}/{channel_id}/{message_id}"


class GalleryHandlers:
    """Answers the gallery's routes from storage, the thumbnail store and the image files."""

    def __init__(self, storage: Storage, thumbnails: ThumbnailStore, load_image: LoadImage):
        self.storage = storage
        self.thumbnails = thumbnails
        self.load_image = load_image

    def application(self) -> web.Application:
        app = web.Application(middlewares=[_headers])
        app.router.add_get("/g/{slug}", self.slash)
        app.router.add_get("/g/{slug}/", self.page)
        app.router.add_get("/g/{slug}/thumb/{picture}.webp", self.thumbnail)
        app.router.add_get("/g/{slug}/image/{picture}", self.image)
        return app

    async def _guild(self, slug: str) -> GuildSettings:
        if not _SLUG.fullmatch(slug):
            raise web.HTTPNotFound()
        settings = await self.storage.guild_by_gallery_slug(slug)
        if settings is None or not settings.gallery_enabled:
            raise web.HTTPNotFound()
        return settings

    async def slash(self, request: web.Request) -> web.Response:
        # Only the path is normalised: the same answer whether or not the slug exists.
        raise web.HTTPMovedPermanently(f"{request.path}/")

    async def page(self, request: web.Request) -> web.Response:
        settings = await self._guild(request.match_info["slug"])
        raw_page = request.query.get("page", "1")
        if not _PAGE.fullmatch(raw_page):
            raise web.HTTPNotFound()
        number = int(raw_page)
        entries, total = await self.storage.gallery_page(
            settings.guild_id, limit=PER_PAGE, offset=(number - 1) * PER_PAGE
        )
        pages = page_count(total)
        if number > pages:
            raise web.HTTPNotFound()
        cards = [
            card_for(
                entry,
                discord_url=message_link(
                    entry.share.guild_id,
                    entry.share.showcase_channel_id,
                    entry.share.showcase_message_id or 0,
                ),
            )
            for entry in entries
        ]
        body = render_page(cards, page=number, pages=pages, total=total)
        return web.Response(
            text=body,
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": PAGE_CACHE},
        )

    async def _listed_picture(self, request: web.Request) -> tuple[GalleryEntry, int]:
        settings = await self._guild(request.match_info["slug"])
        match = _PICTURE.fullmatch(request.match_info["picture"])
        if match is None:
            raise web.HTTPNotFound()
        job_id, index = int(match[1]), int(match[2])
        for entry in await self.storage.gallery_entries_of_job(settings.guild_id, job_id):
            if index in shown_indexes(entry)[0]:
                return entry, index
        raise web.HTTPNotFound()

    async def _stored(self, job: Job, index: int) -> tuple[str, bytes]:
        try:
            return await self.load_image(job, index)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None

    async def thumbnail(self, request: web.Request) -> web.Response:
        entry, index = await self._listed_picture(request)

        async def source() -> bytes:
            return (await self._stored(entry.job, index))[1]

        try:
            data = await self.thumbnails.get(entry.job.id, index, source)
        except FileNotFoundError:
            raise web.HTTPNotFound() from None
        return _image_response(request, data, "image/webp", f"t{entry.job.id}-{index}")

    async def image(self, request: web.Request) -> web.Response:
        entry, index = await self._listed_picture(request)
        name, data = await self._stored(entry.job, index)
        suffix = name[name.rfind(".") :].lower() if "." in name else ""
        content_type = _TYPES.get(suffix, "application/octet-stream")
        response = _image_response(request, data, content_type, f"i{entry.job.id}-{index}")
        response.headers["Content-Disposition"] = f'inline; filename="{_ascii_name(name)}"'
        return response


def _image_response(request: web.Request, data: bytes, content_type: str, tag: str) -> web.Response:
    etag = f'"{tag}-{len(data)}"'
    headers = {"Cache-Control": IMAGE_CACHE, "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=data, content_type=content_type, headers=headers)


def _ascii_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:120] or "image"


def _not_found() -> web.Response:
    """The one 404 of every miss (the middleware answers each ``HTTPNotFound`` with it)."""
    return web.Response(status=404, text="Not found", headers={"Cache-Control": "no-store"})


@web.middleware
async def _headers(request: web.Request, handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        # aiohttp's own 404s and 405s (no such route) and ours look the same.
        response = _not_found()
    except web.HTTPException as exc:
        exc.headers.update(_SECURITY_HEADERS)
        raise
    response.headers.update(_SECURITY_HEADERS)
    return response


class GalleryServer(WebListener):
    """The listening gallery: ``await GalleryServer.start(...)``, later ``await close()``."""

    port_setting = "IMAGINE_GALLERY_PORT"

    @classmethod
    async def start(cls, host: str, port: int, handlers: GalleryHandlers) -> GalleryServer:
        """Listen on ``host:port`` (port 0: a free one, read back from ``.port``)."""
        server = await cls.listen(handlers.application(), host, port)
        log.info("gallery listening on %s", server.url)
        return server
