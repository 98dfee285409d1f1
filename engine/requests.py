"""Frozen request/result types, sizes from aspect ratios, and input validation."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from engine.errors import InvalidRequest
from engine.prompt_syntax import to_compel
from engine.styles import Style

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from engine.settings import EngineSettings

SEED_LIMIT = 2**32
"""Seeds live in 0..2**32-1 (what torch.Generator.manual_seed and users can round-trip)."""

ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "4:3": (4, 3),
    "3:4": (3, 4),
    "3:2": (3, 2),
    "2:3": (2, 3),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "21:9": (21, 9),
    "9:21": (9, 21),
}
"""Supported aspect ratios, ``"w:h"`` -> (w, h)."""

MAX_PROMPT_CHARS = 6000  # Discord's slash option limit; the engine cuts at MAX_CHUNKS windows
MIN_STRENGTH = 0.1
MAX_STRENGTH = 1.0

Operation = Literal["generate", "upscale", "zoom", "describe"]
"""What the engine does with a request: ``generate`` (text-to-image, or image-to-image from
``init_image``), ``upscale`` (``init_image`` enlarged to width x height, then a low-strength
image-to-image pass in tiles), ``zoom`` (``init_image`` shrunk by ``zoom`` onto a
width x height canvas whose border is painted in) or ``describe`` (prompts for ``init_image``
from the captioning model, ``engine.describe``: no images)."""

VARY_SUBTLE = 0.35
"""Image-to-image strength of Vary (Subtle): composition and colours stay, details change."""
VARY_STRONG = 0.7
"""Image-to-image strength of Vary (Strong): the same idea, laid out anew."""
UPSCALE_FACTOR = 2
"""U1-U4: each side of the picture doubles (1024x1024 -> 2048x2048)."""
UPSCALE_STRENGTH = 0.3
"""How far the upscale's image-to-image pass may move from the enlarged picture: enough to draw
new fine detail, too little to change what is there."""


@dataclass(frozen=True)
class GenerationRequest:
    """One user request: ``count`` images that share a prompt and differ only by seed."""

    prompt: str
    seed: int
    width: int
    height: int
    negative_prompt: str = ""
    steps: int = 4
    guidance: float = 1.0
    count: int = 4
    init_image: bytes | None = None
    strength: float = 0.6
    notes: tuple[str, ...] = field(default=(), compare=False)
    operation: Operation = "generate"
    zoom: float = 1.0  # ``zoom`` only: how much the picture shrinks (> 1)
    tile: bool = False  # seamless texture: circular padding in the UNet and the VAE
    style: str = ""  # an IMAGINE_STYLES style's name ("": none); the engine adds its LoRA

    @property
    def seeds(self) -> tuple[int, ...]:
        """The seed of each image: image i uses ``(seed + i) % 2**32``."""
        return tuple((self.seed + i) % SEED_LIMIT for i in range(self.count))

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call."""
        if self.operation == "describe":
            return ("describe",)  # the captioner resizes every picture itself
        img2img = self.init_image is not None
        return (
            self.width,
            self.height,
            self.steps,
            self.guidance,
            img2img,
            self.strength if img2img else None,
            self.operation,
            self.zoom,
            self.tile,  # padding is set per UNet call, so a batch is all tiles or none
            self.style.casefold(),  # one style LoRA per batch (engine/style_adapters.py)
        )

    @property
    def work(self) -> int:
        """GPU work in images of the base size: what the queue and the workers count.

        An upscaled image has ``UPSCALE_FACTOR**2`` times the pixels (and UNet tiles) of one
        generated at the base size, so it counts as that many.
        """
        if self.operation == "upscale":
            return self.count * UPSCALE_FACTOR**2
        return self.count


@dataclass(frozen=True)
class GeneratedImage:
    """One generated image and the seed that recreates it.

    ``pixels``: uint8 (height, width, 3), RGB, in host memory (the encoders read it as is).
    """

    seed: int
    pixels: np.ndarray = field(compare=False)

    @property
    def image(self) -> Image.Image:
        """The pixels as a PIL image (a copy: made where it is asked for, never on the GPU
        thread)."""
        from PIL import Image

        return Image.fromarray(self.pixels)


@dataclass(frozen=True)
class GenerationResult:
    """The images of one request, with the engine time of its batch and user-facing notes."""

    request: GenerationRequest
    images: tuple[GeneratedImage, ...]
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def seeds(self) -> tuple[int, ...]:
        """Seeds of the images, in order."""
        return tuple(image.seed for image in self.images)


@dataclass(frozen=True)
class StepProgress:
    """Progress of the running batch; ``preview`` is a small image when previews are on."""

    step: int
    total: int
    preview: Image.Image | None = None


def size_for_aspect_ratio(ratio: str, base: int = 1024) -> tuple[int, int]:
    """Return ``(width, height)`` for ``ratio`` with an area close to (at most) ``base**2``.

    Sides are multiples of 64 for ``base >= 512`` (what SDXL was trained on) and of 8 for the
    tiny bases that tests use. Among the heights on that grid, it takes the widest width that
    keeps the area within ``base**2`` and picks the pair whose shape is closest to the ratio,
    which yields SDXL's usual sizes (1152x896, 1216x832, 1344x768 at 1024).

    Raises:
        InvalidRequest: the ratio is not one of ``ASPECT_RATIOS``.
    """
    if ratio not in ASPECT_RATIOS:
        choices = ", ".join(ASPECT_RATIOS)
        raise InvalidRequest(f"Unknown aspect ratio '{ratio}'. Choose one of: {choices}.")
    ratio_w, ratio_h = ASPECT_RATIOS[ratio]
    if ratio_w < ratio_h:
        height, width = size_for_aspect_ratio(f"{ratio_h}:{ratio_w}", base)
        return width, height
    grid = 64 if base >= 512 else 8
    area = base * base
    target = math.log(ratio_w / ratio_h)
    best: tuple[float, int, int] | None = None
    for height in range(grid, base + grid, grid):
        width = (area // height) // grid * grid
        if width < height:
            break
        error = abs(math.log(width / height) - target)
        if best is None or error < best[0] - 1e-12:
            best = (error, width, height)
    assert best is not None  # base >= grid, so height == grid always gives a candidate
    return best[1], best[2]


def aspect_ratio_of(width: int, height: int) -> str:
    """The supported aspect ratio whose shape is closest to ``width`` x ``height``."""
    shape = math.log(width / height)

    def distance(ratio: str) -> float:
        ratio_w, ratio_h = ASPECT_RATIOS[ratio]
        return abs(math.log(ratio_w / ratio_h) - shape)

    return min(ASPECT_RATIOS, key=distance)


def make_request(
    prompt: str,
    *,
    settings: EngineSettings,
    negative_prompt: str = "",
    seed: int | None = None,
    aspect_ratio: str = "1:1",
    init_image: bytes | None = None,
    strength: float = 0.6,
    count: int | None = None,
    tile: bool = False,
    style: Style | None = None,
) -> GenerationRequest:
    """Turn user input into a validated request.

    Args:
        prompt: what the text encoders get (already translated).
        settings: engine settings (resolution, steps, guidance, images per request).
        negative_prompt: what to steer away from; raises guidance when guidance <= 1.
        seed: seed of the first image; a random one when None.
        aspect_ratio: one of ``ASPECT_RATIOS``.
        init_image: PNG bytes for image-to-image (variations).
        strength: how far img2img may move away from ``init_image`` (0.1..1).
        count: images to make; ``settings.images_per_request`` when None.
        tile: make seamless textures (the images tile when laid side by side).
        style: a style already checked for this channel (``StyleCatalog.choose``); its
            negative words raise guidance like a negative prompt does.

    Raises:
        InvalidRequest: with a user-readable ``user_message``.
    """
    prompt = (prompt or "").strip()
    negative_prompt = (negative_prompt or "").strip()
    if not prompt:
        raise InvalidRequest("The prompt is empty. Describe the image you want.")
    if len(prompt) > MAX_PROMPT_CHARS or len(negative_prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"The prompt is too long (over {MAX_PROMPT_CHARS} characters).")
    # Weighting syntax is read here too, so that an absurd weight is refused before queueing
    # rather than failing on the GPU side.
    to_compel(prompt)
    if negative_prompt:
        to_compel(negative_prompt)
    if seed is None:
        seed = secrets.randbelow(SEED_LIMIT)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise InvalidRequest(f"The seed must be a whole number from 0 to {SEED_LIMIT - 1}.")
    width, height = size_for_aspect_ratio(aspect_ratio, settings.resolution)
    if count is None:
        count = settings.images_per_request
    if not 1 <= count <= settings.max_batch_images:
        raise InvalidRequest(f"The image count must be from 1 to {settings.max_batch_images}.")
    if init_image is not None:
        if not isinstance(init_image, bytes) or not init_image:
            raise InvalidRequest("The source image is empty.")
        if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
            raise InvalidRequest(
                f"The variation strength must be from {MIN_STRENGTH} to {MAX_STRENGTH}."
            )

    guidance = settings.guidance
    notes: list[str] = []
    if (negative_prompt or (style is not None and style.negative)) and guidance <= 1.0:
        # At guidance <= 1 classifier-free guidance is off and the negative prompt is unused.
        guidance = settings.negative_guidance
        notes.append(
            f"Guidance raised to {guidance:g} so the negative prompt has an effect "
            "(slightly slower)."
        )
    return GenerationRequest(
        prompt=prompt,
        seed=seed,
        width=width,
        height=height,
        negative_prompt=negative_prompt,
        steps=settings.steps,
        guidance=guidance,
        count=count,
        init_image=init_image,
        strength=float(strength),
        notes=tuple(notes),
        tile=bool(tile),
        style=style.name if style is not None else "",
    )
