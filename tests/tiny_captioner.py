"""Build a tiny BLIP captioning model from config, for tests (no network).

The weights are random, so the "captions" are strings of the vocabulary's words; the point is
that the same ``Describer`` code path that loads ``Salesforce/blip-image-captioning-large``
loads this directory by path: processor config, tokenizer and model weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
)

_SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_WORDS = [
    *("a", "an", "the", "of", "on", "in", "with", "and", "at", "dog", "cat", "fox", "city"),
    *("street", "night", "neon", "light", "red", "blue", "green", "gold", "sitting", "tree"),
    *("standing", "running", "mountain", "river", "lake", "painting", "photo", "portrait"),
    *("woman", "man", "car", "sky", "clouds", "sunset", "beach", "house", "flower", "field"),
    *("forest", "snow", "castle", "robot", "dragon", "ship"),
]


def build_tiny_captioner(directory: Path, seed: int = 0) -> Path:
    """Write a tiny random-weight BLIP model + processor into ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab = {word: i for i, word in enumerate([*_SPECIAL, *_WORDS])}
    tokenizer = BertTokenizer(vocab=vocab)
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
    )
    config = BlipConfig(
        text_config={
            "vocab_size": len(vocab),
            "hidden_size": 32,
            "encoder_hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 80,
            "bos_token_id": vocab["[CLS]"],
            "sep_token_id": vocab["[SEP]"],
            "pad_token_id": vocab["[PAD]"],
            "eos_token_id": vocab["[SEP]"],
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    torch.manual_seed(seed)
    BlipForConditionalGeneration(config).save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
