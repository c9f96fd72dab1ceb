"""Exact match and F1 for extractive QA: the official SQuAD definitions, plus characters for Japanese.

- English (``"en"``): exactly the official SQuAD v1.1 / v2.0 evaluation scripts — lowercase, strip
  ASCII punctuation and the articles a/an/the, split on whitespace; F1 over the token bag; the
  best score over all references. In v2 mode an unanswerable question's reference is ``""`` and
  is matched only by an empty prediction, reported separately as ``no_ans_*`` next to ``has_ans_*``.
- Japanese (``"ja"``, also right for Chinese): Japanese has no word boundaries, so the text is
  NFKC-normalised, lowercased, stripped of whitespace and every Unicode punctuation character
  (。、「」（）・ …) and scored over characters — the JaQuAD / JGLUE character-level EM/F1.
- ``"auto"`` decides per example from its text with :func:`detect_language`.

Scores are percentages (0-100), as the official scripts print them.

Example::

    >>> f1_score("the Denver Broncos", "Denver Broncos", "en")
    1.0
    >>> round(f1_score("奈良県", "奈良", "ja"), 3)
    0.8
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Literal

Language = Literal["en", "ja"]
LanguageChoice = Literal["auto", "en", "ja"]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)
# The punctuation the JaQuAD / JSQuAD evaluation scripts strip, besides every Unicode P* character:
# ASCII symbols ($ % + < = > ^ ` | ~ are category S) and their full-width forms.
_JA_REMOVED = _PUNCTUATION | set(
    "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."
)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower, drop punctuation, drop articles, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def normalize_japanese(text: str) -> str:
    """NFKC, lowercase, and remove whitespace, all Unicode punctuation (categories P*) and the
    symbols the JaQuAD/JSQuAD scripts strip (ASCII punctuation, ～, ＄, ...)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return "".join(
        ch
        for ch in text
        if not ch.isspace() and ch not in _JA_REMOVED and not unicodedata.category(ch).startswith("P")
    )


def answer_units(text: str, language: Language) -> list[str]:
    """What F1 counts: whitespace tokens for English, characters for Japanese."""
    if language == "ja":
        return list(normalize_japanese(text))
    return normalize_answer(text).split()


def _normalized(text: str, language: Language) -> str:
    return normalize_japanese(text) if language == "ja" else normalize_answer(text)


def exact_match_score(prediction: str, reference: str, language: Language = "en") -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(_normalized(prediction, language) == _normalized(reference, language))


def f1_score(prediction: str, reference: str, language: Language = "en", version_2: bool = True) -> float:
    """Harmonic mean of precision and recall over the bag of tokens (en) or characters (ja).

    When either side is empty after normalisation the score is 1.0 only if both are (SQuAD v2.0
    script); ``version_2=False`` follows the v1.1 script, where no shared token always means 0.0.
    """
    predicted = answer_units(prediction, language)
    gold = answer_units(reference, language)
    if version_2 and (not predicted or not gold):
        return float(predicted == gold)
    same = sum((Counter(predicted) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision = same / len(predicted)
    recall = same / len(gold)
    return 2 * precision * recall / (precision + recall)


def score_example(
    prediction: str, references: Sequence[str], language: Language = "en", version_2: bool = True
) -> tuple[float, float]:
    """(EM, F1) of one prediction: the best over its references.

    SQuAD v2.0 rules by default: references that normalise to nothing are ignored, and no
    reference left means the answer ``""``. ``version_2=False`` scores as the v1.1 script does.
    """
    golds = [r for r in references if _normalized(r, language)] if version_2 else list(references)
    golds = golds or [""]
    em = max(exact_match_score(prediction, g, language) for g in golds)
    f1 = max(f1_score(prediction, g, language, version_2) for g in golds)
    return em, f1


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # hiragana, katakana
        or 0x3400 <= code <= 0x4DBF  # CJK extension A
        or 0x4E00 <= code <= 0x9FFF  # CJK unified ideographs
        or 0xF900 <= code <= 0xFAFF  # compatibility ideographs
        or 0xFF66 <= code <= 0xFF9F  # half-width katakana
        or 0x20000 <= code <= 0x2FFFF  # supplementary ideographs
    )


def detect_language(text: str) -> Language:
    """``"ja"`` when at least 30% of the letters are kana or CJK ideographs, else ``"en"``."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "en"
    cjk = sum(1 for ch in letters if _is_cjk(ch))
    return "ja" if cjk / len(letters) >= 0.3 else "en"


def resolve_language(choice: LanguageChoice, text: str) -> Language:
    """The scoring language for one example: the fixed choice, or detected from ``text``."""
    return detect_language(text) if choice == "auto" else choice


def _mean(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values) if values else 0.0


def evaluate_predictions(
    predictions: Mapping[str, str],
    references: Mapping[str, Sequence[str]],
    language: LanguageChoice = "auto",
    texts: Mapping[str, str] | None = None,
    version_2: bool | None = None,
) -> dict[str, float | int]:
    """EM/F1 (percent) over every id in ``references``; a missing prediction counts as ``""``.

    ``texts`` gives the text ``"auto"`` inspects per id (the question, say); without it the
    references are used. ``version_2`` (default: whether any reference list is empty) adds
    ``has_ans_*`` and ``no_ans_*`` breakdowns. ``n_ja`` / ``n_en`` count the languages used.
    """
    if version_2 is None:
        version_2 = any(not refs for refs in references.values())
    ems: list[float] = []
    f1s: list[float] = []
    has: list[tuple[float, float]] = []
    no: list[tuple[float, float]] = []
    counts: Counter[str] = Counter()
    for qid, refs in references.items():
        sample = texts[qid] if texts is not None and qid in texts else " ".join(refs)
        lang = resolve_language(language, sample)
        counts[lang] += 1
        em, f1 = score_example(predictions.get(qid, ""), refs, lang, version_2)
        ems.append(em)
        f1s.append(f1)
        (has if any(refs) else no).append((em, f1))
    result: dict[str, float | int] = {
        "exact_match": _mean(ems),
        "f1": _mean(f1s),
        "n": len(ems),
        "n_ja": counts["ja"],
        "n_en": counts["en"],
    }
    if version_2:
        for prefix, group in (("has_ans", has), ("no_ans", no)):
            result[f"{prefix}_exact_match"] = _mean([em for em, _ in group])
            result[f"{prefix}_f1"] = _mean([f1 for _, f1 in group])
            result[f"{prefix}_n"] = len(group)
    return result
