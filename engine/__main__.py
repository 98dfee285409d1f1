"""CLI: ``python -m engine "a prompt"`` -> four PNGs in ./outputs, without Discord."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from engine.errors import EngineError
from engine.requests import ASPECT_RATIOS, make_request
from engine.settings import EngineSettings


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Generate images with SDXL + LCM-LoRA (settings from IMAGINE_* / .env).",
    )
    parser.add_argument("prompt", help="what to draw")
    parser.add_argument("--seed", type=int, default=None, help="seed of the first image")
    parser.add_argument("--negative", default="", help="what to avoid (raises guidance)")
    parser.add_argument("--aspect", default="1:1", choices=list(ASPECT_RATIOS), help="aspect ratio")
    parser.add_argument("--count", type=int, default=None, help="number of images")
    parser.add_argument("--out", type=Path, default=Path("outputs"), help="output folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = _parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        from engine.pipeline import Engine  # imports torch: only after the arguments parse

        settings = EngineSettings()
        request = make_request(
            args.prompt,
            settings=settings,
            negative_prompt=args.negative,
            seed=args.seed,
            aspect_ratio=args.aspect,
            count=args.count,
        )
        engine = Engine.load(settings)
        result = engine.generate(request)
    except EngineError as exc:
        print(f"error: {exc.user_message}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        problems = "; ".join(
            f"IMAGINE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        print(f"error: bad settings: {problems}", file=sys.stderr)
        return 1

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for note in result.notes:
        print(f"note: {note}")
    for generated in result.images:
        path = args.out / f"{stamp}_{generated.seed}.png"
        generated.image.save(path)
        print(f"{path}  seed={generated.seed}")
    print(f"{len(result.images)} image(s) in {result.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
