"""Prompt checks: an unremovable safety floor, then the server's blocklist.

``check_prompt`` is called before a request is queued, with every text of the request: the prompt
as typed and its translation, and the negative prompt (also as typed and translated, if it was).

**The floor** applies everywhere (age-restricted channels and DMs included) and no server setting
changes it:

- ``floor-term``: a term that is sexual about minors by itself (``FLOOR_TERMS``: loli, shota,
  萝莉, 正太 ...), in any text, the negative prompt included (a negative weight there is positive).
  Kept short and word-based: a false positive here is permanent for every server.
- ``floor-youth-sexual``: a youth cue and a sexual cue in the same request, where each alone
  may be fine. Youth cues: ages under 18 (``12yo``, ``12-year-old``, ``twelve year old``,
  ``十二岁``, ``12岁``), child and school words (``YOUTH_TERMS``), or adult-excluding words in the
  negative prompt (``adult``, ``mature``: "not an adult"). Sexual cues: ``SEXUAL_TERMS``, or the
  negative prompt asking for no clothes (a negative tag that is just ``clothes``). Youth and sexual
  words in the negative prompt are what the user does not want: they count for nothing.

**The blocklist** (``DEFAULT_BLOCKLIST`` plus a server's additions, minus its removals) applies
outside age-restricted channels, to the prompt texts only: the negative prompt lists what the user
does not want, and ``nsfw`` belongs there. Removals never touch the floor.

Matching is on words of folded text (``bot.text_folding``: confusables, invisible characters,
width, case, marks) cut by ``bot.text_words`` (disguised spellings, glued single letters, jieba
for Chinese). Latin terms match whole words only, so Essex, sextant, analysis and Scunthorpe are
served; Chinese terms match jieba words (and words that begin or end with the term, such as
色情片, minus listed exceptions such as 母性爱), so 真正太阳 does not contain 正太.

Pure functions, no torch, no discord. Everything is cheap except jieba's first load (about a
second, only for Han text): call ``warm_up`` from a thread at start. The image check
(engine/safety.py) stays the second line of defence: a word list cannot see what the model drew.
"""

from __future__ import annotations

import bisect
import functools
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from bot import text_folding
from bot.text_folding import HAN_CHARS, KANA_CHARS, fold
from bot.text_words import Compounds, HanRun, Segmenter, Words, split_words

# -- the floor ----------------------------------------------------------------------------------

# Sexual about minors by themselves. Short on purpose (see the module docstring). Han terms are
# listed in Simplified form; Traditional text is converted before matching.
FLOOR_TERMS: tuple[str, ...] = (
    "loli",
    "lolis",
    "lolicon",
    "shota",
    "shotas",
    "shotacon",
    "child porn",
    "child pornography",
    "kiddie porn",
    "csam",
    "pthc",
    "jailbait",
    "jail bait",
    "萝莉",
    "正太",
    "幼女",
    "童妓",
    "幼交",
    "ロリ",
    "ロリコン",
    "ショタ",
    "ショタコン",
)

# Youth cues, in the prompt. "girl" and "boy" alone are adult-ambiguous and not cues.
YOUTH_TERMS: tuple[str, ...] = (
    *("child", "children", "childs", "kid", "kids", "kiddie", "kiddies", "kiddo"),
    *("toddler", "toddlers", "baby", "babies", "infant", "infants", "newborn", "newborns"),
    *("minor", "minors", "underage", "underaged", "preteen", "preteens", "tween", "tweens"),
    *("teen", "teens", "teenage", "teenaged", "teenager", "teenagers", "adolescent"),
    *("adolescents", "juvenile", "juveniles", "schoolgirl", "schoolgirls", "schoolboy"),
    *("schoolboys", "schoolchild", "schoolchildren", "schoolkid", "schoolkids", "kindergarten"),
    *("kindergartner", "school girl", "school girls", "school boy", "school boys"),
    *("little girl", "little girls", "little boy", "little boys", "young girl", "young girls"),
    *("young boy", "young boys", "girl child", "boy child", "elementary school"),
    *("primary school", "middle school", "middle schooler", "junior high", "high school"),
    *("high schooler", "high schoolers", "grade school", "grade schooler"),
    *("儿童", "孩子", "小孩", "小孩子", "小女孩", "小男孩", "女童", "男童", "幼童", "幼儿"),
    *("婴儿", "婴幼儿", "小学生", "初中生", "中学生", "高中生", "未成年", "未成年人", "少儿"),
    *("童男", "童女", "小朋友", "学龄前", "子供", "児童"),
)

# Youth words that, before these words, name a thing and not a person: a minor detail, baby blue,
# kid gloves.
_NOT_A_PERSON: dict[str, frozenset[str]] = {
    "minor": frozenset(
        {
            *("detail", "details", "key", "keys", "chord", "chords", "scale", "scales", "flaw"),
            *("flaws", "imperfection", "imperfections", "change", "changes", "injury"),
            *("injuries", "league", "planet", "planets", "character", "characters", "role"),
            *("roles", "mode", "third", "seventh", "arcana", "god", "gods", "deity", "deities"),
            *("road", "roads", "edit", "edits"),
        }
    ),
    "baby": frozenset(
        {
            *("blue", "pink", "oil", "doll", "dolls", "face", "faced", "powder", "bump", "breath"),
            *("shower", "hair", "hairs", "carrot", "carrots", "spinach", "grand", "steps"),
        }
    ),
    "kid": frozenset({"leather", "gloves", "glove", "skin", "mohair"}),
}

# Sexual cues, in the prompt.
SEXUAL_TERMS: tuple[str, ...] = (
    *("nude", "nudes", "nudity", "naked", "nakedness", "nsfw", "porn", "porno", "porns"),
    *("pornographic", "pornography", "sex", "sexual", "sexually", "sexy", "sexier", "erotic"),
    *("erotica", "hentai", "ecchi", "lewd", "topless", "bottomless", "lingerie", "xxx"),
    *("genitals", "genitalia", "penis", "vagina", "boobs", "orgasm", "orgy", "blowjob"),
    *("handjob", "masturbate", "masturbating", "masturbation", "intercourse", "fuck"),
    *("fucking", "fucked", "rape", "raped", "raping", "molest", "molested", "molesting"),
    *("molestation", "incest", "fetish", "bdsm", "bondage", "stripper", "striptease"),
    *("undressed", "undressing", "unclothed", "seductive", "seduce", "seducing", "sensual"),
    *("aroused", "horny", "r18", "ahegao", "upskirt", "cameltoe", "camel toe", "spread legs"),
    *("no clothes", "without clothes", "no clothing", "without clothing"),
    *("裸体", "全裸", "裸照", "赤裸", "赤身裸体", "一丝不挂", "色情", "情色", "性爱", "做爱"),
    *("性交", "性感", "淫荡", "淫秽", "淫乱", "强奸", "猥亵", "无码", "黄图", "涩图", "自慰"),
    *("口交", "肛交", "脱光", "诱奸", "性侵"),
    *("エロ", "ヌード", "セックス", "ヘンタイ", "エッチ"),
)

# In the negative prompt next to a sexual prompt: "not an adult" is a youth cue.
NEGATIVE_ADULT_TERMS: tuple[str, ...] = (
    *("adult", "adults", "mature", "grown", "grownup", "grownups", "grown up", "milf"),
    *("成年人", "成年", "成熟", "大人"),
)

# A negative-prompt tag that is only one of these asks for no clothes: a sexual cue.
_NEGATIVE_CLOTHES = frozenset(
    {
        *("clothes", "clothing", "clothed", "dressed", "garments", "wearing clothes"),
        *("any clothes", "衣服", "衣物", "穿衣", "穿衣服", "衣着", "衣著"),
    }
)

# -- the ordinary list ---------------------------------------------------------------------------

# Explicit terms kept out of channels that are not age-restricted. Modest on purpose: a long list
# mostly produces false positives. Everyday Chinese words (露点 dew point, 裸露 bare, 成人 as in
# 成人礼 coming-of-age ceremony) are deliberately not here.
DEFAULT_BLOCKLIST: tuple[str, ...] = (
    *("nsfw", "nude", "nudes", "nudity", "naked", "topless", "porn", "porno", "pornographic"),
    *("pornography", "sex", "sexual", "erotic", "hentai", "xxx", "explicit", "genitals"),
    *("裸体", "全裸", "色情", "情色", "黄图", "性爱", "做爱", "无码"),
)

# Dictionary words that begin or end with a Han term but do not mean it.
_HAN_EXCEPTIONS = frozenset(
    {
        *("正太路", "萝莉塔", "同性爱", "母性爱", "性感冒", "性感受", "流行性感", "赤裸裸"),
        *("强奸民意", "儿童不宜", "少儿不宜", "女孩子", "男孩子", "老小孩", "生小孩", "婴儿油"),
        *("孩子气", "初中生物", "中学生物", "高中生物", "差堪自慰", "羞堪自慰", "聊以自慰"),
        "自慰队",
    }
)

# Common prompt words that may be glued to a term ("nudewoman", "sexyschoolgirl").
_COMPOUND_PARTS = frozenset(
    {
        *("girl", "girls", "boy", "boys", "woman", "women", "man", "men", "lady", "ladies", "guy"),
        *("guys", "art", "arts", "photo", "photos", "pic", "pics", "picture", "pictures", "anime"),
        *("manga", "hot", "cute", "body", "bodies"),
    }
)

Rule = Literal["floor-term", "floor-youth-sexual", "blocklist"]


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused. ``term`` is the normalised matched term (or cues), for
    moderators' logs; it is never the prompt itself."""

    rule: Rule
    term: str

    @property
    def floor(self) -> bool:
        """True when no server setting can allow this (the safety floor)."""
        return self.rule != "blocklist"


# -- matching --------------------------------------------------------------------------------------

_HAN_ONLY = re.compile(rf"[{HAN_CHARS}]+")
_KANA_ONLY = re.compile(rf"[{KANA_CHARS}]+")
_TERM_TOKEN = re.compile(rf"[{HAN_CHARS}]+|[{KANA_CHARS}]+|[^\W_{HAN_CHARS}{KANA_CHARS}]+")
_HAN_SPACE = re.compile(rf"(?<=[{HAN_CHARS}])\s+(?=[{HAN_CHARS}])")
_NEGATIVE_WEIGHT = re.compile(r"\(([^()]*):\s*-\s*\d*\.?\d+\s*\)")
_TAG_SPLIT = re.compile(r"[,;|\n()\[\]{}。、]+")

_SEGMENTER = Segmenter(
    w
    for w in (*FLOOR_TERMS, *YOUTH_TERMS, *SEXUAL_TERMS, *NEGATIVE_ADULT_TERMS, *_HAN_EXCEPTIONS)
    if _HAN_ONLY.fullmatch(w)
)


def normalise(term: str) -> str:
    """The canonical form of a term or text for comparing lists: folded (``fold``), spaces
    between Han characters removed, Han in Simplified form."""
    folded = _HAN_SPACE.sub("", fold(term))
    if _HAN_ONLY.search(folded):
        folded = _HAN_ONLY.sub(lambda m: _SEGMENTER.to_simplified(m.group()), folded)
    return folded


@dataclass(frozen=True)
class _Term:
    key: str  # normalised, for logs and for removal
    words: tuple[str, ...] = ()  # Latin (or mixed) words
    han: str = ""
    kana: str = ""


@functools.lru_cache(maxsize=4096)
def _compile(term: str) -> _Term | None:
    key = normalise(term)
    compact = key.replace(" ", "")
    if not compact:
        return None
    if _HAN_ONLY.fullmatch(compact):
        return _Term(key=compact, han=compact)
    if _KANA_ONLY.fullmatch(compact):
        return _Term(key=compact, kana=compact)
    words = tuple(_TERM_TOKEN.findall(key))
    return _Term(key=" ".join(words), words=words) if words else None


class _TermSet:
    """Terms compiled for matching, in list order (the first match is reported)."""

    def __init__(
        self,
        terms: Iterable[str],
        *,
        han_compounds: bool = True,
        things: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.han_compounds = han_compounds  # also match Han words beginning or ending with a term
        self.things = things or {}  # {word: next words that make it a thing} (a minor detail)
        self.terms: list[_Term] = []
        seen: set[str] = set()
        for text in terms:
            term = _compile(text)
            if term is not None and term.key not in seen:
                seen.add(term.key)
                self.terms.append(term)

    def without(self, keys: frozenset[str]) -> _TermSet:
        copy = _TermSet((), han_compounds=self.han_compounds, things=self.things)
        copy.terms = [term for term in self.terms if term.key not in keys]
        return copy

    def single_words(self) -> frozenset[str]:
        return frozenset(t.words[0] for t in self.terms if len(t.words) == 1)

    def find(self, words: Words, *, loose: bool = False) -> str | None:
        candidates = words.loose if loose else words.singles
        for term in self.terms:
            if term.han:
                if any(self._han_match(term.han, run) for run in words.han_runs):
                    return term.key
            elif term.kana:
                if term.kana in words.kana:
                    return term.key
            elif len(term.words) == 1:
                if term.words[0] in candidates and not self._names_a_thing(term.words[0], words):
                    return term.key
            elif (
                "".join(term.words) in candidates and all(w.isascii() for w in term.words)
            ) or _sequence_match(term.words, words.positions):
                return term.key
        return None

    def _names_a_thing(self, word: str, words: Words) -> bool:
        """True when every written ``word`` is followed by a word that makes it a thing, not a
        person (``minor details``, ``baby blue``)."""
        things = self.things.get(word)
        if things is None:
            return False
        positions = words.positions
        hits = [i for i, p in enumerate(positions) if p is not None and word in p]
        return bool(hits) and all(  # no hit: the word came from a glued or split candidate
            i + 1 < len(positions) and bool((after := positions[i + 1]) and after & things)
            for i in hits
        )

    def _han_match(self, term: str, run: HanRun) -> bool:
        offsets = run.offsets
        start = run.text.find(term)
        while start >= 0:
            end = start + len(term)
            index = bisect.bisect_right(offsets, start) - 1  # the word the match starts in
            word_start = offsets[index]
            word_end = offsets[index + 1] if index + 1 < len(offsets) else len(run.text)
            if start == word_start and end in offsets:
                return True  # the term is one word or a run of whole words
            if (
                self.han_compounds
                and end <= word_end
                and (start == word_start or end == word_end)
                and run.words
                and run.words[index] not in _HAN_EXCEPTIONS
            ):
                return True  # a word that begins or ends with the term (色情片)
            start = run.text.find(term, start + 1)
        return False


def _sequence_match(sequence: tuple[str, ...], positions: Sequence[frozenset[str] | None]) -> bool:
    n = len(sequence)
    for i in range(len(positions) - n + 1):
        if all((p := positions[i + k]) is not None and sequence[k] in p for k in range(n)):
            return True
    return False


# -- ages ------------------------------------------------------------------------------------------

_NUMBER_WORDS = {
    word: value
    for value, word in enumerate(
        (
            *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
            *("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen"),
            *("seventeen", "eighteen", "nineteen"),
        )
    )
}
_TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
# "12 year old scotch" is not a person.
_THING = (
    r"(?![\s\-_]*(?:whiske?y|scotch|bourbon|wine|rum|cognac|brandy|port|cheese|vinegar|tree|oak"
    r"|house|building|car|dog|cat|horse)s?(?![a-z]))"
)
_YEARS_OLD = rf"[\s\-_]*(?:years?|yrs?|y)[\s\-_./]*(?:old|o)(?![a-z]){_THING}"
_SHORT_AGE = rf"[\s\-_]*(?:yrs?|yo|y/o|y\.o\.?)(?![a-z]){_THING}"
_OF_AGE = r"[\s\-_]*years?[\s\-_]*of[\s\-_]*age(?![a-z])"
_DIGIT_AGE = re.compile(rf"(?<![\d.,])(\d{{1,3}})(?:{_YEARS_OLD}|{_SHORT_AGE}|{_OF_AGE})")
_WORD_AGE = re.compile(
    rf"(?<![a-z])(?:({'|'.join(_TENS_WORDS)})[\s\-]*)?({'|'.join(_NUMBER_WORDS)})"
    rf"(?:{_YEARS_OLD}|{_SHORT_AGE}|{_OF_AGE})"
)
_AGED = re.compile(
    rf"(?<![a-z])aged?[\s:=_\-]*(?:(\d{{1,3}})(?!\d)|({'|'.join(_NUMBER_WORDS)})(?![a-z\-]))"
)
_MONTHS_OLD = re.compile(r"(?<!\d)\d{1,2}[\s\-_]*months?[\s\-_]*old(?![a-z])")
_GRADE = re.compile(
    r"(?<![a-z\d])(?:\d{1,2}(?:st|nd|rd|th)|first|second|third|fourth|fifth|sixth|seventh|eighth"
    r"|ninth)[\s\-_]*grade(?:rs?)?(?![a-z])"
)
_UNDER_18 = re.compile(
    r"(?<![a-z])(?:under|below|younger than)[\s\-_]*(?:18|eighteen)(?![\d\-]|[\s\-_]*months?)"
)
_HAN_DIGIT_AGE = re.compile(r"(?<!\d)(\d{1,3})\s*周?\s*[岁歲歳]")
_HAN_NUMERAL_AGE = re.compile(r"([零〇一二两兩三四五六七八九十几幾多]+)\s*周?\s*[岁歲歳]")
_HAN_UNDER_18 = re.compile(r"未满\s*(?:18|十八)\s*周?\s*[岁歲歳]")
_HAN_DIGITS = dict(
    zip("零〇一二两兩三四五六七八九", (0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7, 8, 9), strict=True)
)


def _han_number(numeral: str) -> int | None:
    """十二 -> 12, 十七八 -> 17, 三十多 -> 30, 几 -> 0 ("a few"); None if no number."""
    if "十" in numeral:
        before, _, after = numeral.partition("十")
        tens = _HAN_DIGITS.get(before[-1], 1) if before else 1
        ones = next((_HAN_DIGITS[ch] for ch in after if ch in _HAN_DIGITS), 0)
        return tens * 10 + ones
    digits = [_HAN_DIGITS[ch] for ch in numeral if ch in _HAN_DIGITS]
    if digits:
        return min(digits)  # 七八岁: seven or eight
    return 0 if any(ch in "几幾" for ch in numeral) else None


def _age_cue(text: str) -> str | None:
    """An under-18 age in folded ``text``, as ``age N`` (or the phrase kind), else None."""
    for match in _DIGIT_AGE.finditer(text):
        if int(match.group(1)) < 18:
            return f"age {int(match.group(1))}"
    for match in _WORD_AGE.finditer(text):
        if not match.group(1) and _NUMBER_WORDS[match.group(2)] < 18:
            return f"age {_NUMBER_WORDS[match.group(2)]}"
    for match in _AGED.finditer(text):
        age = int(match.group(1)) if match.group(1) else _NUMBER_WORDS[match.group(2)]
        if age < 18:
            return f"age {age}"
    for match in _HAN_DIGIT_AGE.finditer(text):
        if int(match.group(1)) < 18:
            return f"age {int(match.group(1))}"
    for match in _HAN_NUMERAL_AGE.finditer(text):
        value = _han_number(match.group(1))
        if value is not None and value < 18:
            return f"age {value}"
    if _MONTHS_OLD.search(text):
        return "age in months"
    if _GRADE.search(text):
        return "school grade"
    if _UNDER_18.search(text) or _HAN_UNDER_18.search(text):
        return "under 18"
    return None


# -- the check -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Lists:
    floor: _TermSet
    youth: _TermSet
    sexual: _TermSet
    negative_adult: _TermSet
    default: _TermSet
    compounds: Compounds


@functools.cache
def _lists() -> _Lists:
    """The built-in lists, compiled on first use (milliseconds)."""
    floor, sexual, default = (
        _TermSet(FLOOR_TERMS),
        _TermSet(SEXUAL_TERMS),
        _TermSet(DEFAULT_BLOCKLIST),
    )
    youth = _TermSet(YOUTH_TERMS, things=_NOT_A_PERSON)
    compounds = Compounds(
        heads=floor.single_words() | sexual.single_words() | default.single_words(),
        parts=_COMPOUND_PARTS | youth.single_words(),
    )
    negative_adult = _TermSet(NEGATIVE_ADULT_TERMS, han_compounds=False)
    return _Lists(floor, youth, sexual, negative_adult, default, compounds)


def _split_weights(text: str) -> tuple[str, list[str]]:
    """``text`` without its negatively weighted parts ``(words:-1)``, and those parts: a negative
    weight turns a prompt's words into a negative prompt's, and the other way round."""
    negated = [m.group(1) for m in _NEGATIVE_WEIGHT.finditer(text)]
    return (_NEGATIVE_WEIGHT.sub(" , ", text) if negated else text), negated


def _words(text: str) -> Words:
    return split_words(text, _SEGMENTER, _lists().compounds)


def _texts(texts: Iterable[str]) -> Sequence[str]:
    """``texts`` as a list of strings; one string is one text, not a list of characters."""
    return [texts] if isinstance(texts, str) else [t for t in texts if isinstance(t, str)]


def _asks_for_no_clothes(negative: str) -> bool:
    tags = (normalise(tag).strip(" .-_*") for tag in _TAG_SPLIT.split(negative))
    return any(tag in _NEGATIVE_CLOTHES for tag in tags)


def check_prompt(
    prompts: Sequence[str],
    negatives: Sequence[str] = (),
    *,
    nsfw_channel: bool,
    extra_terms: Iterable[str] = (),
    removed_terms: Iterable[str] = (),
) -> Refusal | None:
    """Check a request's texts against the safety floor and, outside age-restricted channels,
    the blocklist; return why it is refused, or None to serve it.

    Args:
        prompts: every form of the prompt, typically ``(as_typed, translated)``.
        negatives: every form of the negative prompt.
        nsfw_channel: the channel is age-restricted: the blocklist does not apply (the floor does).
        extra_terms: the server's additional blocklist terms.
        removed_terms: default (or extra) blocklist terms the server switched off; floor terms
            cannot be switched off.
    """
    prompts, negatives = _texts(prompts), _texts(negatives)
    positive: list[str] = []  # what the request asks for
    negative: list[str] = []  # what it asks to avoid
    for text in prompts:
        asked, avoided = _split_weights(fold(text))
        positive.append(asked)
        negative.extend(avoided)
    for text in negatives:
        avoided_text, asked_parts = _split_weights(fold(text))
        negative.append(avoided_text)
        positive.extend(asked_parts)
    positive = [t for t in positive if t.strip()]
    negative = [t for t in negative if t.strip()]
    lists = _lists()
    asked_words = [_words(t) for t in positive]
    avoided_words = [_words(t) for t in negative]

    for words in (*asked_words, *avoided_words):
        if (term := lists.floor.find(words)) is not None:
            return Refusal("floor-term", term)

    youth = next((cue for w in asked_words if (cue := lists.youth.find(w)) is not None), None)
    youth = youth or next((cue for t in positive if (cue := _age_cue(t)) is not None), None)
    if youth is None:
        youth = next(
            (f"negative: {cue}" for w in avoided_words if (cue := lists.negative_adult.find(w))),
            None,
        )
    if youth is not None:
        sexual = next((cue for w in asked_words if (cue := lists.sexual.find(w)) is not None), None)
        if sexual is None and any(_asks_for_no_clothes(t) for t in negative):
            sexual = "negative: clothes"
        if sexual is not None:
            return Refusal("floor-youth-sexual", f"{youth} + {sexual}")

    if nsfw_channel:
        return None
    removed = frozenset(t.key for t in map(_compile, _texts(removed_terms)) if t is not None)
    active = [lists.default.without(removed), _TermSet(_texts(extra_terms)).without(removed)]
    for terms in active:
        for words in asked_words:
            if (term := terms.find(words, loose=True)) is not None:
                return Refusal("blocklist", term)
    return None


def is_floor_term(term: str) -> bool:
    """True when ``term`` contains a floor term (``l0li``, ``蘿莉`` included): unblocking it
    would have no effect, so settings should refuse it."""
    asked, avoided = _split_weights(fold(term))
    return any(_lists().floor.find(_words(t)) is not None for t in (asked, *avoided) if t.strip())


def find_blocked(
    texts: Iterable[str], extra_terms: Iterable[str] = (), removed_terms: Iterable[str] = ()
) -> str | None:
    """Deprecated: ``check_prompt(texts, nsfw_channel=False, ...)``'s term, or None."""
    refusal = check_prompt(
        list(texts), nsfw_channel=False, extra_terms=extra_terms, removed_terms=removed_terms
    )
    return refusal.term if refusal else None


def warm_up() -> None:
    """Load everything slow now (jieba's dictionary, about a second; OpenCC; the character
    tables), so the first Chinese prompt is not delayed. Safe to call from a thread."""
    text_folding.warm_up()
    _SEGMENTER.warm_up()
    _lists()
    check_prompt(["热身 warm-up"], ["無"], nsfw_channel=False)
