"""Lines of text no wider than a given number of terminal columns, measured as readers see them.

A plain-text email is read in a fixed-width font, where a CJK character (and a wide emoji) takes
two columns, a combining mark none. `wrap` breaks at spaces, and also between two wide
characters (Chinese and Japanese run without spaces, and may break there), never before closing
punctuation such as 。 or 」 nor after an opening one; a word wider than the line gets its own.
Widths come from `wcwidth` (Unicode's East Asian Width and zero-width tables).
"""

from __future__ import annotations

from collections.abc import Iterator

from wcwidth import wcwidth

# Characters a line may not start with (kinsoku), or end with.
_NO_START = set("、。，．,.:;!?！？：；）)]］｝」』】〕〉》〙〗"
                "ー々ゝゞぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮ・…‥")
_NO_END = set("（([［｛「『【〔〈《〘〖")


def width(text: str) -> int:
    """Columns `text` takes; a control character counts as one."""
    if text.isascii():
        return len(text)
    return sum(max(wcwidth(ch), 0) if ch.isprintable() else 1 for ch in text)


def wrap(text: str, columns: int) -> list[str]:
    """`text` (one paragraph: runs of white space are one space) in lines of at most
    `columns` display columns."""
    lines: list[str] = []
    units: list[tuple[str, int, bool]] = []  # (text, width, a space before it)
    used = 0
    for unit in _units(text):
        piece, size, spaced = unit
        gap = 1 if spaced and units else 0
        if units and used + gap + size > columns:
            carried: list[tuple[str, int, bool]] = []
            # Keep closing punctuation with what it closes, and opening with what it opens.
            if piece[0] in _NO_START and not spaced and len(units) > 1:
                carried.append(units.pop())
            while len(units) > 1 and units[-1][0][-1] in _NO_END:
                carried.insert(0, units.pop())
            lines.append(_join(units))
            units = [(carried[0][0], carried[0][1], False), *carried[1:]] if carried else []
            used = sum(u[1] + (1 if u[2] and i else 0) for i, u in enumerate(units))
            gap = 1 if spaced and units else 0
            unit = (piece, size, spaced and bool(units))
        units.append(unit)
        used += gap + size
    if units:
        lines.append(_join(units))
    return lines


def _join(units: list[tuple[str, int, bool]]) -> str:
    return "".join((" " if spaced and i else "") + piece
                   for i, (piece, _, spaced) in enumerate(units))


def _units(text: str) -> Iterator[tuple[str, int, bool]]:
    """Unbreakable pieces: a run of narrow characters between spaces, or one wide character,
    each with the zero-width marks after it, and whether a space came before it."""
    piece, size, spaced, wide = "", 0, False, False
    for ch in text:
        if ch.isspace():
            if piece:
                yield piece, size, spaced
                piece, size, wide = "", 0, False
            spaced = True
            continue
        w = max(wcwidth(ch), 0) if ch.isprintable() else 1
        if w == 0:
            piece += ch
            continue
        if piece and (wide or w == 2):
            yield piece, size, spaced
            piece, size, spaced = "", 0, False
        piece, size, wide = piece + ch, size + w, w == 2
    if piece:
        yield piece, size, spaced
