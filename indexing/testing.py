"""Test helpers: a tiny sentence-transformers model built offline, a deterministic fake embedder,
and a minimal PDF written by hand.

None downloads anything, so the indexing tests run without the 470 MB default model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from kotae.indexing.bm25 import bigram_tokenize

_TRAINING_TEXT = [
    "東京は日本の首都です。富士山は日本一高い山である！京都には古い寺が多い？",
    "大阪は食べ物がおいしい。北海道は冬に雪が多く降ります。沖縄の海はきれいだ。",
    "The quick brown fox jumps over the lazy dog. Tokyo is the capital of Japan.",
    "Mount Fuji is the highest mountain in Japan! Is Kyoto full of old temples?",
    "0123456789 passage query title text document index search answer question",
]


def build_tiny_model(folder: Path, dim: int = 16, seed: int = 0) -> Path:
    """Write a randomly initialised 1-layer BERT sentence-transformers model (mean pooling) to ``folder``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast  # type: ignore[attr-defined]

    folder = Path(folder)
    raw = folder / "hf"
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer.train_from_iterator(
        _TRAINING_TEXT * 4, trainers.WordPieceTrainer(vocab_size=400, special_tokens=specials)
    )
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )
    config = BertConfig(
        vocab_size=tokenizer.get_vocab_size(),
        hidden_size=dim,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * dim,
        max_position_embeddings=128,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(raw)
    fast.save_pretrained(raw)
    model = SentenceTransformer(str(raw), device="cpu")
    model.max_seq_length = 128
    target = folder / "model"
    model.save(str(target))
    return target


class HashEmbedder:
    """A fast deterministic stand-in for a sentence embedder: vectors seeded by a hash of the text.

    ``count_tokens`` counts BM25 bigram tokens. ``embedded`` records every text it embedded.
    """

    def __init__(self, dim: int = 16, max_tokens: int = 510, fingerprint: str = "hash-embedder") -> None:
        self.dim = dim
        self.max_tokens = max_tokens
        self.fingerprint = fingerprint
        self.embedded: list[str] = []

    def count_tokens(self, text: str) -> int:
        return len(bigram_tokenize(text))

    def embed(self, texts: list[str]) -> np.ndarray:
        self.embedded.extend(texts)
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            seed = int.from_bytes(
                hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:8], "little"
            )
            vectors[row] = np.random.default_rng(seed).standard_normal(self.dim)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def store_differences(left: Path, right: Path) -> dict:
    """How two stores differ: consistency problems of each, passage ids, texts + metadata, source
    manifests, and the largest absolute difference between two vectors of the same passage.

    The engine tests assert on it; ``bench/bench_index_engines.py --compare`` prints it.
    """
    from kotae.indexing.store import FaissDocumentStore

    contents, manifests, problems = [], [], []
    for folder in (left, right):
        store = FaissDocumentStore(folder)
        try:
            problems.append(store.check_consistency())
            contents.append({d.id: d for d in store.filter_documents()})
            manifests.append({k: (v[0], sorted(v[1])) for k, v in store.source_manifest().items()})
        finally:
            store.close()
    a, b = contents
    shared = sorted(set(a) & set(b))
    differ = max(
        (float(np.abs(np.subtract(a[i].embedding or [], b[i].embedding or [])).max()) for i in shared),
        default=0.0,
    )
    return {
        "passages": [len(a), len(b)],
        "problems": problems,
        "same_ids": set(a) == set(b),
        "same_texts_and_meta": all((a[i].content, a[i].meta) == (b[i].content, b[i].meta) for i in shared),
        "same_manifest": manifests[0] == manifests[1],
        "max_abs_vector_difference": differ,
    }


def write_pdf(path: Path, pages: list[list[str]], title: str = "") -> Path:
    """A minimal valid PDF written by hand: one page per item, each line drawn in Helvetica."""
    objects: list[bytes] = []
    count = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(count))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {count} >>".encode())
    font = 3 + 2 * count
    for i, lines in enumerate(pages):
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops += [f"({escaped}) Tj", "T*"]
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {4 + 2 * i} 0 R "
            f"/Resources << /Font << /F1 {font} 0 R >> >> >>".encode()
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    info = len(objects) + 1
    objects.append(f"<< /Title ({title}) >>".encode())
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        info,
        xref,
    )
    path.write_bytes(bytes(out))
    return path


def private_progress_lock() -> None:
    """In a forked child that a test may SIGKILL: give tqdm (and its subclasses) a lock of its own.

    tqdm's default lock includes a ``multiprocessing.RLock``, a semaphore shared with the parent
    and every other child; bm25s creates (disabled) tqdm bars on every BM25 build, each taking that
    lock. A child killed inside one of those windows leaves the semaphore taken for good, and the
    parent's next bar then waits forever (a pytest run once hung so in ``test_kill_9_loop``).
    """
    import threading

    from tqdm import std

    lock = threading.RLock()
    classes: list[type] = [std.tqdm]
    while classes:
        cls = classes.pop()
        cls.set_lock(lock)  # type: ignore[attr-defined]
        classes.extend(cls.__subclasses__())
