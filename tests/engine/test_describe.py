"""/describe on the GPU side: the captioner, its prompts, its tickets and the executor's path.

The captioner is a tiny random-weight BLIP built from config and loaded by path through the
same ``from_pretrained`` calls as a real checkpoint (tests/tiny_captioner.py).
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.describe import (
    MAX_SUGGESTION_CHARS,
    SUGGESTIONS,
    Describer,
    suggestions,
)
from engine.errors import GenerationFailed, ModelNotFound
from engine.executor import DESCRIBE_OFF, SOURCE_REFUSED, TicketExecutor
from engine.requests import GenerationRequest
from engine.runner import EngineRunner
from engine.safety import SafetyVerdict
from engine.tickets import (
    Failed,
    Finished,
    Started,
    Ticket,
    event_from_fields,
    event_to_fields,
    ticket_from_fields,
    ticket_to_fields,
)


def picture(colour=(200, 30, 30), size=(80, 50)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def describer(tiny_captioner_dir) -> Describer:
    return Describer(str(tiny_captioner_dir), device="cpu")


def describe_ticket(job_id: int, data: bytes, seed: int = 5) -> Ticket:
    request = GenerationRequest(
        prompt="",
        seed=seed,
        width=1216,
        height=832,
        count=1,
        init_image=data,
        operation="describe",
    )
    return Ticket(job_id, 7, request, safety="withhold", check_source=True)


# ------------------------------------------------------------------------------ prompts
def test_suggestions_clean_dedupe_and_cut():
    long = "a castle " + "with towers " * 40
    found = suggestions(
        [
            "an arafed dog sitting on the grass",
            "there is an dog sitting on the grass.",  # the same once cleaned
            "  AN   DOG sitting on the grass ",  # and again, by case
            "",
            "araffe",
            long,
            "a red fox",
            "a blue fox",
        ]
    )
    assert found[0] == "an dog sitting on the grass"
    assert found[1].startswith("a castle with towers") and len(found[1]) <= MAX_SUGGESTION_CHARS
    assert not found[1].endswith(" ")
    assert found[2:] == ("a red fox", "a blue fox")
    assert len(found) == SUGGESTIONS
    assert suggestions(["x", "y"], count=1) == ("x",)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(max_size=400), max_size=12))
def test_suggestions_of_any_text_are_distinct_printable_and_short(captions):
    found = suggestions(captions)
    assert len(found) <= SUGGESTIONS
    assert len({s.casefold() for s in found}) == len(found)
    for text in found:
        assert text and text == " ".join(text.split()) and len(text) <= MAX_SUGGESTION_CHARS


# ------------------------------------------------------------------------------ the model
def test_four_distinct_prompts_per_picture_repeatable_by_seed(describer):
    red, green = picture(), picture((10, 200, 30), (40, 90))
    both = describer.describe([red, green], [5, 6])
    assert len(both) == 2
    for found in both:
        assert len(found) == SUGGESTIONS and len({s.casefold() for s in found}) == SUGGESTIONS
        assert all(text.strip() for text in found)
    # A picture's prompts depend on its own seed, not on its batch-mates.
    assert describer.describe([red], [5]) == [both[0]]
    assert describer.describe([green], [6]) == [both[1]]
    other = describer.describe([red], [99])[0]
    assert other[0] == both[0][0]  # the best caption is the beam search's: no seed in it
    assert other != both[0]  # the sampled ones follow the seed


def test_a_disabled_describer_refuses_and_a_missing_model_names_its_setting(tmp_path):
    off = Describer("")
    assert not off.enabled
    with pytest.raises(GenerationFailed):
        off.describe([picture()], [1])
    with pytest.raises(ModelNotFound, match="IMAGINE_DESCRIBE_MODEL"):
        Describer(str(tmp_path / "no-such-model"), device="cpu")


# ------------------------------------------------------------------------------ tickets
def test_a_describe_ticket_and_its_prompts_cross_the_wire():
    ticket = describe_ticket(3, picture())
    assert ticket.batch_key == ("describe",)  # whatever the picture's size
    assert describe_ticket(4, picture(), seed=1).batch_key == ticket.batch_key
    assert ticket.request.work == 1
    fields = ticket_to_fields(ticket)
    assert fields[b"init"] == ticket.request.init_image
    assert ticket_from_fields(fields) == ticket
    done = Finished(3, files=(), seeds=(), seconds=0.2, captions=("a fox", "狐狸", "c", "d"))
    assert event_from_fields(event_to_fields(done)) == done
    # An image result carries no "captions" key: what a bot of the previous release reads.
    plain = Finished(3, files=(), seeds=(1,), seconds=0.2)
    assert "captions" not in json.loads(event_to_fields(plain)[b"meta"])


# ------------------------------------------------------------------------------ executor
class _NoEngine:
    """The runner needs an engine to start; describing never touches it."""


class _FlagAll:
    enabled = True

    def check(self, images):
        return [SafetyVerdict(True, "nsfw", 0.99) for _ in images]


async def run_tickets(tickets, **options) -> list:
    runner = EngineRunner(lambda: _NoEngine(), warm_up=False, encode_workers=1)
    await runner.start()
    events: list = []

    async def emit(event):
        events.append(event)

    try:
        await TicketExecutor(runner, worker="w", **options).run(tickets, emit)
    finally:
        await runner.close()
    return events


async def test_the_executor_describes_a_batch_in_one_turn(describer):
    red, green = picture(), picture((10, 200, 30))
    events = await run_tickets(
        [describe_ticket(1, red, 5), describe_ticket(2, green, 6)], describer=lambda: describer
    )
    assert events[0] == Started((1, 2), "w")
    finished = {e.job_id: e for e in events[1:]}
    assert set(finished) == {1, 2} and all(isinstance(e, Finished) for e in events[1:])
    assert finished[1].captions == describer.describe([red], [5])[0]
    assert finished[2].captions == describer.describe([green], [6])[0]
    assert finished[1].files == () and finished[1].worker == "w"


async def test_without_a_describer_the_job_fails_with_the_setting_named():
    [event] = await run_tickets([describe_ticket(1, picture())])
    assert event == Failed(1, DESCRIBE_OFF, "engine")
    assert "IMAGINE_DESCRIBE_MODEL" in DESCRIBE_OFF


async def test_a_flagged_upload_is_refused_before_the_captioner_sees_it(describer):
    [event] = await run_tickets(
        [describe_ticket(1, picture())], describer=lambda: describer, safety=lambda: _FlagAll()
    )
    assert event == Failed(1, SOURCE_REFUSED, "refused")


async def test_a_bad_picture_fails_alone_and_its_batch_mate_is_described(describer):
    events = await run_tickets(
        [describe_ticket(1, b"not a picture"), describe_ticket(2, picture())],
        describer=lambda: describer,
    )
    outcomes = {e.job_id: e for e in events if not isinstance(e, Started)}
    assert isinstance(outcomes[1], Failed) and outcomes[1].reason == "crash"
    assert isinstance(outcomes[2], Finished) and len(outcomes[2].captions) == SUGGESTIONS
