"""Text-encoding milliseconds per request: compel (weights, long prompts, blends) against today.

"Today" is diffusers' own ``encode_prompt``, which the engine still uses for prompts without
syntax; every other row goes through ``engine.prompt_encoding.PromptEncoder`` with compel, as
the engine serves them: a prompt seen for the first time (its parse is not remembered) unless
the row says otherwise. One request = one prompt (the engine encodes each request once,
whatever its image count). Random weights (``bench/sdxl_random.py``): speed depends on shapes
only. The toy tokenizer makes every character one token, so the long prompt is 200 characters.

    python bench/prompt_bench.py --tiny --device cpu      # toy text encoders on the CPU
    python bench/prompt_bench.py --device cuda            # SDXL's full-size text encoders

Rows are printed as a markdown table and written to ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/prompt_bench.py` puts only bench/ on it

log = logging.getLogger("bench.prompt_bench")

PLAIN = "a lighthouse on a cliff at dusk, 35mm"
LONG = ", ".join(["a lighthouse on a cliff at dusk"] * 6) + ", 35mm"  # ~200 tokens here


@dataclass(frozen=True)
class Row:
    """One kind of prompt, encoded."""

    prompt_kind: str
    path: str  # "diffusers" or "compel"
    chunks: int
    median_ms: float
    vs_today: float


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy-size text encoders")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--runs", type=int, default=20, help="timed runs, median (20)")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "bench" / "results" / "prompt_encoding.json"
    )
    return parser.parse_args(argv)


def cases(encoder: Any) -> dict[str, tuple[str, Callable[[], Any]]]:
    """Each kind of prompt and the call the engine makes for it."""

    def compel(prompt: str, remembered: bool = False) -> Callable[[], Any]:
        from engine.prompt_syntax import to_compel

        encoded = to_compel(prompt)

        def run() -> Any:
            if not remembered:
                encoder._conjunction.cache_clear()  # a prompt seen for the first time
            return encoder._encode_with_compel(encoded, "", guidance=False)

        return run

    def first_time(negative: str) -> Callable[[], Any]:
        def run() -> Any:
            encoder._conjunction.cache_clear()
            return encoder.encode(PLAIN, negative, guidance=True)

        return run

    return {
        "plain (today)": ("diffusers", lambda: encoder.encode(PLAIN, "", guidance=False)),
        "plain, through compel": ("compel", compel(PLAIN)),
        "weights (red:1.3), [x], x++": (
            "compel",
            compel("a (lighthouse:1.3) on a [cliff] at dusk++, 35mm"),
        ),
        "weights, re-roll (parse remembered)": (
            "compel",
            compel("a (lighthouse:1.3) on a [cliff] at dusk++, 35mm", remembered=True),
        ),
        "200 tokens": ("compel", compel(LONG)),
        "multi-prompt a:: b::0.5": ("compel", compel("a lighthouse:: a cliff at dusk::0.5")),
        "negative prompt, guidance on (today)": (
            "diffusers",
            lambda: encoder.encode(PLAIN, "blurry, text", guidance=True),
        ),
        "weighted negative, guidance on": (
            "compel",
            first_time("(blurry:1.4), text"),
        ),
    }


def table(rows: list[Row]) -> str:
    lines = ["| prompt | encoder | chunks | ms | x today |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        lines.append(
            f"| {r.prompt_kind} | {r.path} | {r.chunks} | {r.median_ms:.2f} | {r.vs_today:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    from bench.common import device_and_dtype, median_ms, run_header
    from bench.sdxl_random import build_pipeline
    from engine.prompt_encoding import PromptEncoder

    device, dtype = device_and_dtype(args.device)
    pipe = build_pipeline(tiny=args.tiny, device=device, dtype=dtype)
    encoder = PromptEncoder(pipe, device)
    header = run_header(device, dtype, tiny=args.tiny, runs=args.runs)
    print(json.dumps(header))
    rows: list[Row] = []
    today = None
    for name, (path, run) in cases(encoder).items():
        ms, conditioning = median_ms(run, args.runs, device)
        today = today or ms
        rows.append(Row(name, path, conditioning.chunks, ms, ms / today))
        log.info("%s: %.2f ms", name, ms)
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"header": header, "rows": [asdict(r) for r in rows]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
