"""The offset index: which Raft index holds which offsets, for every entry in the tail.

Contract: owns the mapping between Raft *indexes* and log *offsets* (the only place besides
partition/state.py where both appear). Pure data structure, no I/O. Offsets are structural:
the entry at index i starts one past the last offset of entry i-1, so the index is fully
described by the first entry's index, its base offset and every entry's span.

Strategy: parallel Python lists indexed by ``index - first_index`` (Raft indexes are
contiguous): base offset, term, kind (a bytearray), max timestamp. Base offsets strictly
increase (every entry occupies >= 1 offset), so ``locate(offset)`` is a ``bisect``: O(log n).
Appends and tail truncation are O(1) amortised / O(k); dropping a prefix (compaction) is
O(n) but happens once per retention pass.
"""

from __future__ import annotations

from bisect import bisect_right

from partition.header import EntryKind

__all__ = ["OffsetIndex"]


class OffsetIndex:
    __slots__ = ("_bases", "_end_offset", "_first_index", "_kinds", "_max_ts", "_terms")

    def __init__(self, first_index: int = 1, start_offset: int = 0) -> None:
        self._first_index = first_index
        self._end_offset = start_offset
        self._bases: list[int] = []
        self._terms: list[int] = []
        self._kinds = bytearray()
        self._max_ts: list[int] = []

    # --- shape ---------------------------------------------------------------------------

    @property
    def first_index(self) -> int:
        return self._first_index

    @property
    def last_index(self) -> int:
        """Index of the last entry (first_index - 1 when empty)."""
        return self._first_index + len(self._bases) - 1

    @property
    def start_offset(self) -> int:
        return self._bases[0] if self._bases else self._end_offset

    @property
    def end_offset(self) -> int:
        """The offset the next appended entry gets."""
        return self._end_offset

    def __len__(self) -> int:
        return len(self._bases)

    def contains(self, index: int) -> bool:
        return 0 <= index - self._first_index < len(self._bases)

    # --- lookups -------------------------------------------------------------------------

    def term_of(self, index: int) -> int:
        return self._terms[index - self._first_index]

    def kind_of(self, index: int) -> EntryKind:
        return EntryKind(self._kinds[index - self._first_index])

    def set_kind(self, index: int, kind: EntryKind) -> None:
        self._kinds[index - self._first_index] = kind

    def base_of(self, index: int) -> int:
        """Base offset of ``index``; for ``last_index + 1`` the end offset."""
        pos = index - self._first_index
        if pos == len(self._bases):
            return self._end_offset
        if not 0 <= pos < len(self._bases):
            raise IndexError(f"index {index} is not in the offset index")
        return self._bases[pos]

    def end_of(self, index: int) -> int:
        """One past the last offset of ``index``."""
        return self.base_of(index + 1)

    def locate(self, offset: int) -> int:
        """The index of the entry containing ``offset``; caller checks the range first."""
        if not self.start_offset <= offset < self._end_offset:
            raise IndexError(f"offset {offset} is not in the offset index")
        return self._first_index + bisect_right(self._bases, offset) - 1

    def max_timestamp(self, lo: int, hi: int) -> int | None:
        """Largest batch timestamp among indexes [lo, hi] (control entries count -1), or
        None when part of the range is not in the index."""
        if not (self.contains(lo) and self.contains(hi)) or hi < lo:
            return None
        f = self._first_index
        return max(self._max_ts[lo - f : hi - f + 1])

    def prefix(self, upto: int) -> tuple[list[int], list[int], bytes, list[int]]:
        """Copies of (bases, terms, kinds, max timestamps) of the entries <= ``upto``
        (a checkpoint's image: list slices, pointer copies only)."""
        n = max(0, upto - self._first_index + 1)
        return self._bases[:n], self._terms[:n], bytes(self._kinds[:n]), self._max_ts[:n]

    @classmethod
    def from_parts(
        cls,
        first_index: int,
        start_offset: int,
        end_offset: int,
        bases: list[int],
        terms: list[int],
        kinds: bytes,
        max_ts: list[int],
    ) -> OffsetIndex:
        """An index holding exactly these entries (a checkpoint's, validated by its reader)."""
        index = cls(first_index, start_offset)
        index._bases = bases
        index._terms = terms
        index._kinds = bytearray(kinds)
        index._max_ts = max_ts
        index._end_offset = end_offset
        return index

    # --- changes -------------------------------------------------------------------------

    def append(self, index: int, term: int, span: int, kind: EntryKind, max_ts: int) -> int:
        """Add the entry after the last one; returns its base offset."""
        assert index == self.last_index + 1, (index, self.last_index)
        base = self._end_offset
        self._bases.append(base)
        self._terms.append(term)
        self._kinds.append(kind)
        self._max_ts.append(max_ts)
        self._end_offset = base + span
        return base

    def truncate_from(self, index: int) -> None:
        """Drop entries >= ``index`` (a new leader overwrote the uncommitted tail)."""
        pos = index - self._first_index
        assert 0 <= pos <= len(self._bases), (index, self._first_index)
        if pos == len(self._bases):
            return
        self._end_offset = self._bases[pos]
        del self._bases[pos:]
        del self._terms[pos:]
        del self._kinds[pos:]
        del self._max_ts[pos:]

    def compact_to(self, first_kept_index: int) -> None:
        """Drop entries < ``first_kept_index`` (the Raft log prefix is gone)."""
        pos = first_kept_index - self._first_index
        if pos <= 0:
            return
        if pos >= len(self._bases):
            # everything we know is dropped; the next entry starts at the end offset
            self._bases.clear()
            self._terms.clear()
            self._kinds.clear()
            self._max_ts.clear()
            self._first_index = first_kept_index
            return
        del self._bases[:pos]
        del self._terms[:pos]
        del self._kinds[:pos]
        del self._max_ts[:pos]
        self._first_index = first_kept_index
