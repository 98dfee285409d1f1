"""The wire format of tickets and events: what Redis carries between the bot and workers."""

from __future__ import annotations

import json

import pytest

from engine.requests import GenerationRequest
from engine.tickets import (
    SCHEMA_VERSION,
    Failed,
    Finished,
    ImageFile,
    Progress,
    Started,
    Ticket,
    WireError,
    WireVersionError,
    event_from_fields,
    event_to_fields,
    ticket_from_fields,
    ticket_to_fields,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4  # binary-safe: every byte value


def variation_ticket() -> Ticket:
    request = GenerationRequest(
        prompt="一只猫 -> a cat",
        seed=2**32 - 1,
        width=1216,
        height=832,
        negative_prompt="blurry",
        steps=4,
        guidance=1.5,
        count=4,
        init_image=PNG,
        strength=0.6,
        notes=("guidance raised",),
    )
    return Ticket(job_id=42, user_id=7, request=request, safety="withhold", file_limit=25 * 2**20)


def test_a_variation_ticket_carries_its_source_image_as_raw_bytes():
    ticket = variation_ticket()
    fields = ticket_to_fields(ticket)
    assert fields[b"init"] == PNG  # not base64, not inside the JSON
    assert b"init_image" not in fields[b"meta"]
    assert json.loads(fields[b"meta"])["request"]["prompt"] == "一只猫 -> a cat"
    back = ticket_from_fields(fields)
    assert back == ticket  # notes stay with the bot (compare=False) and are not sent
    assert back.request.notes == ()
    assert back.batch_key == ticket.batch_key


def test_a_plain_ticket_has_no_init_part():
    ticket = Ticket(1, 2, GenerationRequest(prompt="fox", seed=1, width=64, height=64))
    fields = ticket_to_fields(ticket)
    assert b"init" not in fields
    assert ticket_from_fields(fields) == ticket


@pytest.mark.parametrize(
    "event",
    [
        Started((1, 2, 3), "gpu-a"),
        Progress(5, 2, 4, preview=PNG),
        Progress(5, 4, 4),
        Finished(
            5,
            files=(ImageFile(1, "imagine_5_1.png", PNG), ImageFile(3, "imagine_5_3.png", b"x")),
            seeds=(10, 11, 12, 13),
            seconds=0.75,
            flagged=(3,),
            withheld=(2,),
            notes=("1 image(s) withheld",),
            worker="gpu-a",
        ),
        Failed(5, "Out of GPU memory.", "engine"),
    ],
)
def test_events_survive_the_wire(event):
    fields = event_to_fields(event)
    assert all(isinstance(k, bytes) and isinstance(v, bytes) for k, v in fields.items())
    assert event_from_fields(fields) == event


def test_another_schema_version_is_refused_with_the_job_it_was_for():
    fields = ticket_to_fields(variation_ticket())
    fields[b"v"] = str(SCHEMA_VERSION + 1).encode()
    with pytest.raises(WireVersionError) as caught:
        ticket_from_fields(fields)
    assert caught.value.job_id == 42
    assert "Upgrade the bot and the workers" in str(caught.value)
    event = event_to_fields(Failed(9, "x"))
    event[b"v"] = b"0"
    with pytest.raises(WireVersionError):
        event_from_fields(event)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {b"v": b"1"},
        {b"v": b"one", b"meta": b"{}", b"type": b"ticket"},
        {b"v": b"1", b"meta": b"not json", b"type": b"ticket"},
        {b"v": b"1", b"meta": b"[1, 2]", b"type": b"ticket"},
        {b"v": b"1", b"meta": b'{"job_id": 3}', b"type": b"ticket"},
    ],
)
def test_garbage_is_a_wire_error_not_a_crash(fields):
    with pytest.raises(WireError):
        ticket_from_fields(fields)


def test_an_unknown_event_type_is_a_wire_error():
    fields = event_to_fields(Failed(3, "x"))
    fields[b"type"] = b"exploded"
    with pytest.raises(WireError) as caught:
        event_from_fields(fields)
    assert caught.value.job_id == 3
