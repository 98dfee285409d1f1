"""Styles: the IMAGINE_STYLES file, and style LoRAs swapped into the tiny pipeline per batch."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import InvalidRequest, make_request
from engine.style_adapters import StyleAdapters, read_factors
from engine.styles import (
    MAX_SUGGESTIONS,
    Style,
    StyleCatalog,
    load_styles,
    parse_styles,
    styled_texts,
)
from engine.tickets import Ticket, ticket_from_fields, ticket_to_fields
from lifecycle.queue import FairQueue, QueuedJob

# --------------------------------------------------------------------------- the style file


def test_a_good_file_gives_its_styles_in_order():
    catalog = parse_styles(
        """
[ink]
lora = "a/b"
weight = 0.8
trigger = "ink  wash painting"
negative = "color"

[Neon-2]
lora = "x.safetensors"
nsfw_only = true
"""
    )
    assert [s.name for s in catalog] == ["ink", "Neon-2"]
    ink = catalog.get("INK")
    assert ink == Style("ink", "a/b", 0.8, "ink wash painting", "color", False)
    assert catalog.get(" neon-2 ").nsfw_only is True
    assert catalog.get("neon") is None


@pytest.mark.parametrize(
    ("entry", "why"),
    [
        ("[a]\nweight = 0.5\n", "'lora'"),
        ('[a]\nlora = ""\n', "'lora'"),
        ('[a]\nlora = "x"\nweight = 0\n', "above 0"),
        ('[a]\nlora = "x"\nweight = 3\n', "at most 2"),
        ('[a]\nlora = "x"\nweight = "high"\n', "a number"),
        ('[a]\nlora = "x"\nweight = true\n', "a number"),
        ('[a]\nlora = "x"\ntrigerr = "ink"\n', "unknown key(s) trigerr"),
        ('[a]\nlora = "x"\ntrigger = 3\n', "must be text"),
        ('[a]\nlora = "x"\ntrigger = "(ink:40)"\n', "'trigger'"),
        ('[a]\nlora = "x"\nnsfw_only = "yes"\n', "true or false"),
        ('a = "not a table"\n', "not a table"),
        ('["two words"]\nlora = "x"\n', "a name is"),
        ('["none"]\nlora = "x"\n', "reserved"),
    ],
)
def test_a_broken_entry_is_left_out_with_a_warning(caplog, entry, why):
    text = f'{entry}\n[good]\nlora = "g"\n'
    with caplog.at_level(logging.WARNING, logger="engine.styles"):
        catalog = parse_styles(text)
    assert [s.name for s in catalog] == ["good"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "left out" in warnings[0] and why in warnings[0], warnings


def test_names_that_differ_only_by_case_keep_the_first(caplog):
    with caplog.at_level(logging.WARNING, logger="engine.styles"):
        catalog = parse_styles('[Ink]\nlora = "a"\n[ink]\nlora = "b"\n')
    assert [(s.name, s.lora) for s in catalog] == [("Ink", "a")]
    assert "already has this name" in caplog.text


def test_an_unreadable_file_gives_no_styles(tmp_path, caplog):
    bad = tmp_path / "styles.toml"
    bad.write_text("[ink\nlora = ", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="engine.styles"):
        assert len(load_styles(bad)) == 0
        assert len(load_styles(tmp_path / "missing.toml")) == 0
    assert caplog.text.count("serving without styles") == 2
    assert len(load_styles("")) == 0


def _catalog(count: int = 3) -> StyleCatalog:
    styles = [Style(f"style{i:02d}", "x") for i in range(count)]
    others = [Style("ink", "x"), Style("pink", "x"), Style("nude", "x", nsfw_only=True)]
    return StyleCatalog([*styles, *others])


def test_suggestions_match_what_was_typed_and_what_the_server_allows():
    catalog = _catalog()
    assert [s.name for s in catalog.suggest("ink", nsfw=False)] == ["ink", "pink"]
    assert [s.name for s in catalog.suggest("INK", ["pink", "style01"], nsfw=False)] == ["pink"]
    assert [s.name for s in catalog.suggest("nu", nsfw=False)] == []
    assert [s.name for s in catalog.suggest("nu", nsfw=True)] == ["nude"]
    # Names that start with the text come first; otherwise the file's order.
    assert [s.name for s in catalog.suggest("in", nsfw=False)] == ["ink", "pink"]
    assert [s.name for s in catalog.suggest("", ["ink"], nsfw=True)] == ["ink"]


def test_autocomplete_answers_at_most_25_of_any_number_of_styles():
    catalog = _catalog(60)
    found = catalog.suggest("style", nsfw=False)
    assert len(found) == MAX_SUGGESTIONS
    assert [s.name for s in found] == [f"style{i:02d}" for i in range(MAX_SUGGESTIONS)]
    assert [s.name for s in catalog.suggest("style5", nsfw=False)] == [
        f"style{i}" for i in range(50, 60)
    ]


def test_the_submitted_style_is_checked_not_trusted():
    catalog = _catalog()
    assert catalog.choose("Ink", nsfw=False).name == "ink"
    with pytest.raises(InvalidRequest, match=r"no style 'inc' here\. Pick one of: .*ink"):
        catalog.choose("inc", nsfw=False)
    with pytest.raises(InvalidRequest, match="no style 'ink'"):
        catalog.choose("ink", ["pink"], nsfw=False)
    with pytest.raises(InvalidRequest, match="only offered in age-restricted channels"):
        catalog.choose("nude", nsfw=False)
    assert catalog.choose("nude", nsfw=True).nsfw_only
    with pytest.raises(InvalidRequest, match="offers no styles"):
        StyleCatalog().choose("ink", nsfw=False)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.booleans())
def test_any_typed_style_is_a_style_or_a_clear_refusal(typed, nsfw):
    catalog = _catalog()
    assert len(catalog.suggest(typed, nsfw=nsfw)) <= MAX_SUGGESTIONS
    try:
        style = catalog.choose(typed, nsfw=nsfw)
    except InvalidRequest as exc:
        assert exc.user_message and len(exc.user_message) < 400
    else:
        assert style in catalog.offered(nsfw=nsfw)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_any_style_file_text_gives_styles_or_a_toml_error(text):
    import tomllib

    try:
        catalog = parse_styles(text)
    except tomllib.TOMLDecodeError:
        return
    for style in catalog:
        assert style.lora and 0 < style.weight <= 2


def test_trigger_goes_first_and_negative_after_the_users():
    ink = Style("ink", "x", trigger="ink wash", negative="color")
    assert styled_texts(ink, "a fox", "blur") == ("ink wash, a fox", "blur, color")
    assert styled_texts(ink, "a fox", "") == ("ink wash, a fox", "color")
    assert styled_texts(None, "a fox", "blur") == ("a fox", "blur")
    assert styled_texts(Style("plain", "x"), "a fox", "") == ("a fox", "")


def test_a_styles_negative_raises_guidance_like_a_negative_prompt(tiny_engine_settings):
    plain = make_request("a fox", settings=tiny_engine_settings, seed=1)
    styled = make_request(
        "a fox", settings=tiny_engine_settings, seed=1, style=Style("ink", "x", negative="color")
    )
    assert plain.guidance == tiny_engine_settings.guidance and plain.style == ""
    assert styled.guidance == tiny_engine_settings.negative_guidance and styled.style == "ink"
    assert styled.batch_key != plain.batch_key


def test_tickets_carry_the_style_and_plain_tickets_stay_as_before(tiny_engine_settings):
    request = make_request("a fox", settings=tiny_engine_settings, seed=1, style=Style("ink", "x"))
    ticket = Ticket(job_id=1, user_id=2, request=request)
    assert ticket_from_fields(ticket_to_fields(ticket)).request.style == "ink"
    plain = Ticket(job_id=1, user_id=2, request=dataclasses.replace(request, style=""))
    assert b'"style"' not in ticket_to_fields(plain)[b"meta"]


def test_read_factors_puts_weight_and_alpha_into_the_up_factor():
    down, up = torch.ones(2, 3), torch.ones(5, 2)
    state = {"unet.a.to_q.lora.down.weight": down, "unet.a.to_q.lora.up.weight": up}
    factors = read_factors(state, {"unet.a.to_q.alpha": 1.0}, weight=0.5)
    pair = factors["unet"]["a.to_q"]
    assert torch.equal(pair.down, down) and torch.equal(pair.up, up * 0.5 * (1.0 / 2))
    from engine.style_adapters import StyleLoadError

    with pytest.raises(StyleLoadError, match="unsupported LoRA keys"):
        read_factors({"unet.a.lokr_w1": down}, None, 1.0)
    with pytest.raises(StyleLoadError, match="not for the UNet"):
        read_factors({"vae.a.lora_A.weight": down, "vae.a.lora_B.weight": up}, None, 1.0)


# --------------------------------------------------------------------------- on the pipeline


@pytest.fixture(scope="module")
def styled_engine(tiny_engine_settings, tiny_styles_file):
    from engine import Engine

    return Engine.load(tiny_engine_settings.model_copy(update={"styles": str(tiny_styles_file)}))


def _request(settings, name: str = "", seed: int = 5, prompt: str = "a red fox", **kw):
    """A request for style ``name`` as the bot's check would not pass it (a style the engine
    may not know), or, with ``style=``, for a checked style as make_request makes it."""
    request = make_request(prompt, settings=settings, seed=seed, count=2, **kw)
    return dataclasses.replace(request, style=name) if name else request


def _pixels(result) -> list[np.ndarray]:
    return [image.pixels for image in result.images]


def _max_diff(a: list[np.ndarray], b: list[np.ndarray]) -> int:
    return max(int(np.abs(x.astype(int) - y.astype(int)).max()) for x, y in zip(a, b, strict=True))


def test_the_broken_entry_is_left_out_and_the_others_load(styled_engine):
    assert styled_engine.styles.names == ["ink", "neon", "velvet"]


def test_a_style_changes_the_pixels_and_no_style_keeps_them(
    styled_engine, tiny_engine, tiny_engine_settings
):
    plain = _pixels(styled_engine.generate(_request(tiny_engine_settings)))
    # The zeroed slots add exactly nothing: the same pixels as an engine without styles.
    assert _max_diff(plain, _pixels(tiny_engine.generate(_request(tiny_engine_settings)))) == 0
    for name in ("ink", "neon", "velvet"):
        styled = _pixels(styled_engine.generate(_request(tiny_engine_settings, name)))
        assert _max_diff(styled, plain) > 20, name
    again = _pixels(styled_engine.generate(_request(tiny_engine_settings)))
    assert _max_diff(again, plain) == 0  # switching back leaves nothing behind


def test_a_style_gets_its_trigger_and_negative(styled_engine, tiny_engine_settings):
    """ink's trigger goes before the prompt and its negative into the negative prompt."""
    ink = styled_engine.styles.style("ink")
    result = styled_engine.generate(_request(tiny_engine_settings, style=ink))
    by_hand = make_request(
        "ink wash painting, a red fox",
        settings=tiny_engine_settings,
        seed=5,
        count=2,
        negative_prompt="color",
    )
    # The same LoRA with the words typed by hand instead: the same pixels.
    wordless = dataclasses.replace(ink, trigger="", negative="")
    styled_engine.styles.styles["ink"] = wordless
    try:
        same = styled_engine.generate(dataclasses.replace(by_hand, style="ink"))
    finally:
        styled_engine.styles.styles["ink"] = ink
    assert _max_diff(_pixels(result), _pixels(same)) == 0
    plain = styled_engine.generate(dataclasses.replace(by_hand, prompt="a red fox", style="ink"))
    assert _max_diff(_pixels(result), _pixels(plain)) > 0
    assert result.request.guidance == tiny_engine_settings.negative_guidance


def test_two_styles_in_one_queue_run_in_separate_batches_each_as_alone(
    styled_engine, tiny_engine_settings
):
    requests = [
        _request(tiny_engine_settings, "ink", seed=1),
        _request(tiny_engine_settings, "neon", seed=2),
        _request(tiny_engine_settings, "ink", seed=3),
        _request(tiny_engine_settings, "", seed=4),
    ]
    queue = FairQueue()

    async def batches() -> list[list[int]]:
        for i, request in enumerate(requests):
            job = QueuedJob(job_id=i, user_id=i, images=2, batch_key=request.batch_key)
            await queue.submit(job)
        found = []
        while len(queue):
            found.append([job.job_id for job in await queue.next_batch(16)])
        return found

    import asyncio

    groups = asyncio.run(batches())
    assert sorted(map(sorted, groups)) == [[0, 2], [1], [3]]
    batched = {}
    for group in groups:
        for index, result in zip(
            group, styled_engine.generate_batch([requests[i] for i in group]), strict=True
        ):
            batched[index] = _pixels(result)
    for index, request in enumerate(requests):
        alone = _pixels(styled_engine.generate(request))
        assert _max_diff(batched[index], alone) <= 1, index  # batch shape differs: 1/255


def test_a_style_the_engine_did_not_load_fails_clearly(styled_engine, tiny_engine_settings):
    with pytest.raises(InvalidRequest, match="style 'broken' is not available"):
        styled_engine.generate(_request(tiny_engine_settings, "broken"))


def _pipe(model: Path):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline.from_pretrained(model)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _latents(pipe) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return pipe(
        "a red fox",
        num_inference_steps=2,
        guidance_scale=1.0,
        height=64,
        width=64,
        generator=generator,
        output_type="latent",
    ).images


def test_the_slot_computes_what_diffusers_own_adapters_do(tiny_model_dir, tiny_styles_file):
    """Each style in the slot equals diffusers' ``load_lora_weights`` + ``set_adapters`` with
    its weight (the reference the field uses): the same LoRA math, to float rounding."""
    catalog = load_styles(tiny_styles_file)
    pipe = _pipe(tiny_model_dir)
    adapters = StyleAdapters.load(pipe, catalog)
    for style in catalog:
        adapters.activate(style.name)
        ours = _latents(pipe)
        reference = _pipe(tiny_model_dir)
        path = Path(style.lora)
        folder, name = (path.parent, path.name) if path.is_file() else (path, None)
        reference.load_lora_weights(str(folder), weight_name=name, adapter_name="s")
        reference.set_adapters(["s"], [style.weight])
        expected = _latents(reference)
        assert torch.allclose(ours, expected, atol=1e-4), style.name
        assert not torch.allclose(ours, _latents(_pipe(tiny_model_dir)), atol=1e-2)


def test_switching_styles_does_not_recompile_a_compiled_unet(tiny_model_dir, tiny_styles_file):
    pipe = _pipe(tiny_model_dir)
    adapters = StyleAdapters.load(pipe, load_styles(tiny_styles_file))
    plain = _latents(pipe)
    pipe.unet.compile(backend="eager")  # in place, as engine/compiling.py does
    adapters.activate("neon", keep_graphs=True)
    neon = _latents(pipe)  # compiles once, with the slot in the graph
    with torch.compiler.set_stance("fail_on_recompile"):
        adapters.activate("ink", keep_graphs=True)
        ink = _latents(pipe)
        adapters.activate(None, keep_graphs=True)  # zeros: exactly nothing added
        assert torch.equal(_latents(pipe), plain)
        adapters.activate("neon", keep_graphs=True)
        assert torch.equal(_latents(pipe), neon)
        # Turning the slot's layers off (what an eager engine does for no style) is a change
        # the compiled graph guards on: that is why a compiled engine keeps zeros instead.
        adapters.activate(None)
        with pytest.raises(RuntimeError, match="recompile"):
            _latents(pipe)
    assert not torch.allclose(ink, neon, atol=1e-2)


def test_diffusers_hotswap_cannot_swap_styles_that_target_other_modules(
    tiny_model_dir, tiny_styles_file
):
    """Why engine/style_adapters.py copies into its own slot instead of calling diffusers'
    hotswap (ISSUE-NOTES asks for "diffusers' LoRA hotswap"): after ink (attention
    projections), neon (to_k, ff.net.2, proj_in) is refused. Should a diffusers release accept
    it, this fails and the slot can give way to ``load_lora_weights(..., hotswap=True)``."""
    catalog = load_styles(tiny_styles_file)
    ink, neon = Path(catalog.get("ink").lora), Path(catalog.get("neon").lora)
    pipe = _pipe(tiny_model_dir)
    pipe.enable_lora_hotswap(target_rank=8)
    pipe.load_lora_weights(str(ink.parent), weight_name=ink.name, adapter_name="style")
    with pytest.raises(RuntimeError, match="unexpected keys"):
        pipe.load_lora_weights(str(neon), adapter_name="style", hotswap=True)


def test_no_style_turns_the_slot_off_and_gives_the_plain_pixels(tiny_model_dir, tiny_styles_file):
    pipe = _pipe(tiny_model_dir)
    plain = _latents(pipe)
    adapters = StyleAdapters.load(pipe, load_styles(tiny_styles_file))
    for keep_graphs in (False, True, False):
        adapters.activate("ink")
        assert not torch.equal(_latents(pipe), plain)
        adapters.activate(None, keep_graphs=keep_graphs)
        assert torch.equal(_latents(pipe), plain), keep_graphs
    assert not any(p.requires_grad for p in pipe.unet.parameters())


def test_a_lora_for_another_model_is_left_out(tiny_model_dir, tmp_path, caplog):
    from safetensors.torch import save_file

    module = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q"
    wrong = tmp_path / "sd15.safetensors"
    save_file(
        {
            f"unet.{module}.lora.down.weight": torch.ones(4, 320),
            f"unet.{module}.lora.up.weight": torch.ones(320, 4),
        },
        str(wrong),
    )
    nowhere = tmp_path / "missing.safetensors"
    catalog = StyleCatalog([Style("sd15", str(wrong)), Style("gone", str(nowhere))])
    with caplog.at_level(logging.WARNING, logger="engine.style_adapters"):
        adapters = StyleAdapters.load(_pipe(tiny_model_dir), catalog)
    assert adapters.names == []
    assert "style 'sd15' left out" in caplog.text and "other shapes" in caplog.text
    assert "style 'gone' left out" in caplog.text
