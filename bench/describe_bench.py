"""/describe: what proposing four prompts for a picture costs on the GPU thread.

A random-weight BLIP (``--tiny``: toy size; otherwise the shapes of
``Salesforce/blip-image-captioning-large``: ViT-L/16 at 384 px and a BERT-base text decoder)
is written to a temporary folder with a tokenizer of its vocabulary size and loaded the way
``IMAGINE_DESCRIBE_MODEL`` is (``engine.describe.Describer``). Then ``Describer.describe``
(one beam search of 4 for the batch, then 6 sampled captions per picture) is timed for one
picture and for a batch of ``--batch``, median of ``--runs``. Random weights write captions of
random length: the rows cap them at ``--tokens`` new tokens (60, what the bot allows).

    python bench/describe_bench.py --tiny --device cpu     # toy size on the CPU (CI-sized)
    python bench/describe_bench.py --device cuda           # BLIP-large shapes, fp16

Rows are printed as a markdown table and written to ``--out`` (JSON) as soon as measured.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # `python bench/describe_bench.py` puts only bench/ on it

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="toy-size BLIP")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--runs", type=int, default=5, help="timed calls, median (5)")
    parser.add_argument("--batch", type=int, default=4, help="pictures in the batch row (4)")
    parser.add_argument("--tokens", type=int, default=60, help="most new tokens (60)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    return parser.parse_args(argv)


def blip_config(tiny: bool) -> tuple[Any, int]:
    """A BLIP config (toy, or BLIP-large's shapes) and its image size."""
    from transformers import BlipConfig

    if tiny:
        text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        text |= {"num_attention_heads": 2, "encoder_hidden_size": 32, "vocab_size": 64}
        vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
        vision |= {"num_attention_heads": 2, "image_size": 32, "patch_size": 8}
        size = 32
    else:  # Salesforce/blip-image-captioning-large
        text = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12}
        text |= {"num_attention_heads": 12, "encoder_hidden_size": 1024, "vocab_size": 30524}
        vision = {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24}
        vision |= {"num_attention_heads": 16, "image_size": 384, "patch_size": 16}
        size = 384
    text |= {"bos_token_id": 2, "sep_token_id": 3, "pad_token_id": 0, "eos_token_id": 3}
    return BlipConfig(text_config=text, vision_config=vision), size


def write_model(folder: Path, tiny: bool) -> Path:
    """A random-weight BLIP with processor and tokenizer, saved as a checkpoint folder."""
    import torch
    from transformers import (
        BertTokenizer,
        BlipForConditionalGeneration,
        BlipImageProcessorPil,
        BlipProcessor,
    )

    config, size = blip_config(tiny)
    words = [f"w{i}" for i in range(config.text_config.vocab_size - len(SPECIAL))]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate([*SPECIAL, *words])})
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": size, "width": size}),
        tokenizer=tokenizer,
    )
    torch.manual_seed(0)
    BlipForConditionalGeneration(config).save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def picture(seed: int) -> bytes:
    """A 1024x1024 PNG like a fitted upload (a gradient, so it is not blank)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x = np.linspace(0, 255, 1024, dtype=np.float32)
    pixels = np.stack([np.add.outer(x, x) / 2, np.tile(x, (1024, 1)), rng.random((1024, 1024))])
    buffer = io.BytesIO()
    Image.fromarray(np.moveaxis(pixels, 0, -1).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from bench.common import device_and_dtype, median_ms, run_header

    device, dtype = device_and_dtype(args.device)
    import engine.describe as describe_module
    from engine.describe import Describer

    describe_module.MAX_NEW_TOKENS = args.tokens
    header = run_header(device, dtype, model="tiny BLIP" if args.tiny else "BLIP-large shapes")
    rows: list[dict[str, Any]] = []

    def record(what: str, ms: float, note: str = "") -> None:
        rows.append({"what": what, "median_ms": round(ms, 2), "note": note})
        print(f"| {what} | {ms:.2f} | {note} |", flush=True)
        if args.out is not None:
            args.out.write_text(json.dumps({"header": header, "rows": rows}, indent=1))

    print(json.dumps(header), flush=True)
    print("| what | ms | note |\n| --- | --- | --- |", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        path = write_model(Path(folder), args.tiny)
        started = time.perf_counter()
        describer = Describer(str(path), device.type, str(dtype).removeprefix("torch."))
        record("load (once, at start)", (time.perf_counter() - started) * 1000)
    pictures = [picture(i) for i in range(args.batch)]
    one, found = median_ms(lambda: describer.describe(pictures[:1], [1]), args.runs, device)
    record("describe 1 picture", one, f"{len(found[0])} prompts")
    many, found = median_ms(
        lambda: describer.describe(pictures, list(range(args.batch))), args.runs, device
    )
    record(f"describe {args.batch} pictures (one batch)", many, f"{many / args.batch:.1f}/picture")
    if device.type == "cuda":
        import torch

        peak = torch.cuda.max_memory_allocated(device) / 2**30
        record("peak GPU memory (GiB, not ms)", peak)
    return 0


if __name__ == "__main__":
    sys.exit(main())
