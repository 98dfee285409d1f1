"""Build a tiny MarianMT translation model from config, for tests (no network).

The weights are random, so the "translations" are gibberish; the point is that the very same
``Translator`` code path that loads ``Helsinki-NLP/opus-mt-zh-en`` can load this directory by
path: ``source.spm``, ``target.spm``, ``vocab.json``, tokenizer config and model weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import sentencepiece as spm
import torch
from transformers import MarianConfig, MarianMTModel, MarianTokenizer

# A small bilingual corpus: enough distinct characters that the Chinese test prompts
# (simplified and traditional, after opencc) are mostly covered by the source model.
_SOURCE_LINES = [
    "赛博朋克 城市 夜晚 霓虹灯",
    "一只 戴 礼帽 的 柴犬 在 埃菲尔铁塔 前 骑车",
    "猫 狗 龙 山 水 花 树 月亮 太阳 星空",
    "中国 风景 画 古风 少女 城市 机器人",
    "美丽 的 日落 海边 雪山 森林 油画 插画",
    "城市 夜景 高清 细节 电影 光影",
    "cyberpunk city night neon 8k detailed",
]
_TARGET_LINES = [
    "cyberpunk city night neon lights",
    "a shiba inu wearing a top hat riding a bike in front of the eiffel tower",
    "cat dog dragon mountain water flower tree moon sun starry sky",
    "chinese landscape painting ancient style girl city robot",
    "beautiful sunset beach snow mountain forest oil painting illustration",
    "city at night high resolution detail cinematic lighting",
    "cyberpunk city night neon 8k detailed",
]


def _train_spm(lines: list[str], prefix: Path) -> Path:
    corpus = prefix.with_suffix(".txt")
    # Repeat the lines: SentencePiece wants a few sentences to estimate piece scores.
    corpus.write_text("\n".join(lines * 5) + "\n", encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(prefix),
        vocab_size=200,
        hard_vocab_limit=False,  # the corpus is tiny; take what it has
        character_coverage=1.0,
        model_type="unigram",
        minloglevel=2,
    )
    return prefix.with_suffix(".model")


def build_tiny_marian(directory: Path) -> Path:
    """Write a tiny random-weight MarianMT model + tokenizer into ``directory``.

    Args:
        directory: an empty or new folder.

    Returns:
        ``directory``, loadable with ``MarianMTModel.from_pretrained`` / ``MarianTokenizer``
        (and therefore with ``engine.translation.Translator(str(directory))``).
    """
    directory = Path(directory)
    work = directory / "_spm"
    work.mkdir(parents=True, exist_ok=True)
    source_model = _train_spm(_SOURCE_LINES, work / "source")
    target_model = _train_spm(_TARGET_LINES, work / "target")

    # Marian uses one joint vocab.json over both SentencePiece models, with </s>=0, <unk>=1
    # and <pad> as the last id (as the Helsinki-NLP checkpoints do).
    vocab: dict[str, int] = {"</s>": 0, "<unk>": 1}
    for model_file in (source_model, target_model):
        processor = spm.SentencePieceProcessor(model_file=str(model_file))
        for piece_id in range(processor.get_piece_size()):
            piece = processor.id_to_piece(piece_id)
            if piece not in vocab and piece not in ("<s>", "</s>", "<unk>"):
                vocab[piece] = len(vocab)
    vocab["<pad>"] = len(vocab)

    spm_dir = directory
    (spm_dir / "source.spm").write_bytes(source_model.read_bytes())
    (spm_dir / "target.spm").write_bytes(target_model.read_bytes())
    (spm_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")

    tokenizer = MarianTokenizer(
        source_spm=str(spm_dir / "source.spm"),
        target_spm=str(spm_dir / "target.spm"),
        vocab=str(spm_dir / "vocab.json"),
        source_lang="zh",
        target_lang="en",
    )
    tokenizer.save_pretrained(directory)

    pad_id = vocab["<pad>"]
    config = MarianConfig(
        vocab_size=len(vocab),
        decoder_vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=128,
        pad_token_id=pad_id,
        eos_token_id=0,
        decoder_start_token_id=pad_id,
        forced_eos_token_id=0,
    )
    torch.manual_seed(0)
    model = MarianMTModel(config).eval()
    # Random weights may emit any piece, including the Chinese source pieces that share the
    # joint vocabulary; ban non-ASCII pieces so the "translation" looks like English text.
    with torch.no_grad():
        for piece, piece_id in vocab.items():
            if not piece.replace("\u2581", "").isascii():
                model.final_logits_bias[0, piece_id] = -1e4
    model.save_pretrained(directory)
    return directory
