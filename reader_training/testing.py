"""Tiny readers for tests: a word/character-level fast tokenizer and a small BERT, built in seconds.

Nothing is downloaded. ASCII text is split into words and punctuation; every other character
(kana, kanji, 。) is its own token, so Japanese answers line up with tokens. Used by kotae's own
tests and usable by any test that needs a real (if untrained) reader folder.

Example::

    tokenizer = tiny_tokenizer(["Alice met Bob.", "奈良は古都です。"])
    model = tiny_reader(tokenizer)
    model.save_pretrained(folder); tokenizer.save_pretrained(folder)
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_tokenizer(texts: Iterable[str], cls_at_end: bool = False) -> Any:
    """A ``PreTrainedTokenizerFast`` whose vocabulary is every word/character in ``texts``.

    ``cls_at_end`` puts ``[CLS]`` after the final ``[SEP]`` (XLNet style) instead of first.
    """
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r"[^\x00-\x7f]"), behavior="isolated"), pre_tokenizers.Whitespace()]
    )
    vocab = {token: index for index, token in enumerate(SPECIALS)}
    for text in texts:
        for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text)):
            vocab.setdefault(piece, len(vocab))
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    specials = [(token, vocab[token]) for token in ("[CLS]", "[SEP]")]
    if cls_at_end:
        tokenizer.post_processor = TemplateProcessing(
            single="$A [SEP] [CLS]", pair="$A [SEP] $B:1 [SEP]:1 [CLS]:1", special_tokens=specials
        )
    else:
        tokenizer.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=specials
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        pad_token="[PAD]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )


def tiny_reader(tokenizer: Any, hidden: int = 32, layers: int = 2, seed: int = 0) -> Any:
    """A randomly initialised ``BertForQuestionAnswering`` sized for ``tokenizer``."""
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    return BertForQuestionAnswering(config)
