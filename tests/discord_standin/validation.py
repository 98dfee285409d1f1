"""Discord's limits on a message payload, answered the way Discord answers them (400 50035)."""

from __future__ import annotations

from typing import Any

from .models import MessageFlag, iter_components

MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_EMBED_TOTAL = 6000
MAX_ACTION_ROWS = 5
MAX_ROW_BUTTONS = 5
MAX_V2_COMPONENTS = 40
MAX_CUSTOM_ID = 100
MAX_LABEL = 80
MAX_ATTACHMENTS = 10
MAX_REQUEST_BYTES = 25 * 2**20

_EMBED_LIMITS = {"title": 256, "description": 4096}


class FormErrors:
    """Collects errors keyed by JSON path and renders Discord's nested `errors` object."""

    def __init__(self) -> None:
        self.errors: dict[str, Any] = {}

    def add(self, path: tuple[Any, ...], code: str, message: str) -> None:
        node = self.errors
        for key in path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": code, "message": message})

    def max_length(self, path: tuple[Any, ...], value: Any, limit: int) -> None:
        if value is not None and len(value) > limit:
            self.add(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")

    def body(self) -> dict[str, Any] | None:
        if not self.errors:
            return None
        return {"code": 50035, "message": "Invalid Form Body", "errors": self.errors}


def validate_message(payload: dict[str, Any], *, prefix: tuple[Any, ...] = ()) -> dict | None:
    """Return Discord's 400 body for an invalid message payload, or None when it is valid."""
    form = FormErrors()
    flags = int(payload.get("flags") or 0)
    components_v2 = bool(flags & MessageFlag.IS_COMPONENTS_V2)

    content = payload.get("content")
    form.max_length((*prefix, "content"), content, MAX_CONTENT)
    if components_v2 and content:
        form.add(
            (*prefix, "content"),
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' field cannot be used when using MessageFlags.IS_COMPONENTS_V2",
        )

    embeds = payload.get("embeds") or []
    form.max_length((*prefix, "embeds"), embeds, MAX_EMBEDS)
    total = 0
    for i, embed in enumerate(embeds):
        for key, limit in _EMBED_LIMITS.items():
            form.max_length((*prefix, "embeds", i, key), embed.get(key), limit)
        total += sum(len(embed.get(key) or "") for key in _EMBED_LIMITS)
        total += len((embed.get("footer") or {}).get("text") or "")
        total += len((embed.get("author") or {}).get("name") or "")
        for j, fld in enumerate(embed.get("fields") or []):
            form.max_length((*prefix, "embeds", i, "fields", j, "name"), fld.get("name"), 256)
            form.max_length((*prefix, "embeds", i, "fields", j, "value"), fld.get("value"), 1024)
            total += len(fld.get("name") or "") + len(fld.get("value") or "")
    if total > MAX_EMBED_TOTAL:
        form.add(
            (*prefix, "embeds"),
            "MAX_EMBED_SIZE_EXCEEDED",
            f"Embed size exceeds maximum size of {MAX_EMBED_TOTAL}",
        )

    components = payload.get("components")
    if components:
        _check_components(form, (*prefix, "components"), components, components_v2)
    return form.body()


def _check_components(form: FormErrors, path: tuple[Any, ...], rows: list, v2: bool) -> None:
    if v2:
        count = sum(1 for _ in iter_components(rows))
        if count > MAX_V2_COMPONENTS:
            form.add(
                path, "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_V2_COMPONENTS} or fewer in length."
            )
    else:
        form.max_length(path, rows, MAX_ACTION_ROWS)
        for i, row in enumerate(rows):
            if row.get("type") != 1:
                form.add(
                    (*path, i), "UNION_TYPE_CHOICES", 'Value of field "type" must be one of (1,).'
                )
                continue
            children = row.get("components") or []
            buttons = [c for c in children if c.get("type") == 2]
            if len(buttons) > MAX_ROW_BUTTONS or (buttons and len(buttons) != len(children)):
                form.add(
                    (*path, i, "components"),
                    "BASE_TYPE_MAX_LENGTH",
                    f"Must be {MAX_ROW_BUTTONS} or fewer in length.",
                )
            if not children:
                form.add(
                    (*path, i, "components"), "BASE_TYPE_MIN_LENGTH", "Must be 1 or more in length."
                )

    seen: set[str] = set()
    for component in iter_components(rows):
        custom_id = component.get("custom_id")
        where = (*path, "custom_id", custom_id)
        if component.get("type") == 2:
            style = component.get("style")
            form.max_length((*path, "label"), component.get("label"), MAX_LABEL)
            if style == 5 and (not component.get("url") or custom_id is not None):
                form.add(
                    (*path, "url"),
                    "BUTTON_COMPONENT_URL_REQUIRED",
                    "A link button needs a url and no custom_id",
                )
            if style in (1, 2, 3, 4) and custom_id is None:
                form.add(
                    (*path, "custom_id"),
                    "BUTTON_COMPONENT_CUSTOM_ID_REQUIRED",
                    "A custom id is required",
                )
        if component.get("type") == 12:
            items = component.get("items") or []
            if not 1 <= len(items) <= 10:
                form.add(
                    (*path, "items"), "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 10 in length."
                )
        if custom_id is None:
            continue
        if not 1 <= len(custom_id) <= MAX_CUSTOM_ID:
            form.add(
                where, "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {MAX_CUSTOM_ID} in length."
            )
        if custom_id in seen:
            form.add(
                where, "COMPONENT_CUSTOM_ID_DUPLICATED", "Component custom id cannot be duplicated"
            )
        seen.add(custom_id)


def is_empty_message(payload: dict[str, Any], file_count: int) -> bool:
    return not (
        (payload.get("content") or "").strip()
        or payload.get("embeds")
        or payload.get("components")
        or payload.get("sticker_ids")
        or payload.get("poll")
        or file_count
    )
