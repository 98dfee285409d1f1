"""Tile mode through the engine: its own batches, restored padding, and the wire.

That circular padding makes the networks wrap is shown on the networks themselves in
``test_seamless.py``; here the engine's use of it."""

from __future__ import annotations

import numpy as np
import torch

from engine import Engine, EngineSettings, GenerationRequest, make_request
from engine.tickets import Ticket, ticket_from_fields, ticket_to_fields


def test_tiles_and_plain_images_never_share_a_batch(tiny_engine_settings: EngineSettings):
    plain = make_request("a red cat", settings=tiny_engine_settings, seed=1)
    tile = make_request("a red cat", settings=tiny_engine_settings, seed=1, tile=True)
    assert tile.tile and not plain.tile
    assert tile.batch_key != plain.batch_key


def test_a_tile_batch_wraps_and_leaves_the_networks_as_they_were(
    tiny_engine: Engine, tiny_engine_settings: EngineSettings
):
    plain = make_request("a red cat", settings=tiny_engine_settings, seed=11, count=2)
    tile = make_request("a red cat", settings=tiny_engine_settings, seed=11, count=2, tile=True)
    before = tiny_engine.generate(plain)
    tiled = tiny_engine.generate(tile)
    after = tiny_engine.generate(plain)
    assert [i.seed for i in tiled.images] == [11, 12]
    assert not np.array_equal(tiled.images[0].pixels, before.images[0].pixels)
    # Padding is set for the tile batch only: the next plain batch is exactly as before.
    for a, b in zip(before.images, after.images, strict=True):
        assert np.array_equal(a.pixels, b.pixels)
    convs = [m for m in tiny_engine.pipe.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {conv.padding_mode for conv in convs} == {"zeros"}
    # The same seed makes the same tile again.
    again = tiny_engine.generate(tile)
    assert np.array_equal(again.images[1].pixels, tiled.images[1].pixels)


def test_tile_tickets_cross_the_wire_and_plain_ones_stay_as_before():
    ticket = Ticket(job_id=3, user_id=4, request=GenerationRequest("p", 1, 64, 64, tile=True))
    back = ticket_from_fields(ticket_to_fields(ticket))
    assert back == ticket and back.request.tile
    plain = ticket_to_fields(Ticket(1, 2, GenerationRequest("p", 1, 64, 64)))
    assert b"tile" not in plain[b"meta"]
