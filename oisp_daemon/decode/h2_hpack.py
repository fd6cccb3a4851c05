"""HPACK decoding (RFC 7541) for one direction of one HTTP/2 connection, tolerant of unknown state.

The `hpack` library's Decoder is all-or-nothing per header block: one index into a dynamic table
entry it does not have (a connection the sensor joined after its handshake) and the whole block is
lost, and with it every entry the rest of that block would have added, so later blocks would look
up the wrong entries. The sensor must never guess a header value, and must keep decoding what it
can, so this walks a block field by field with the library's own pieces (its static and dynamic
HeaderTable with eviction, integer and Huffman decoding):

- an index beyond the entries known here is a field whose name and value are unknown: it is left
  out and counted (`unknown` in the result), nothing else is affected. That is sound because the
  entries known are always the newest ones of the peer's table: entries are added at the front,
  and the peer evicts its older (unknown) entries before any known one.
- a literal "with incremental indexing" whose name is such an unknown index adds an entry whose
  size is unknown, and eviction can no longer be followed: from then on the table is `lost` and
  every dynamic reference is unknown (static ones and literals still decode).
- a block that cannot be parsed at all (truncated, bad Huffman) loses the table the same way.

The table size follows the dynamic table size updates in the blocks: SETTINGS_HEADER_TABLE_SIZE
only bounds what the encoder may choose, and the encoder must announce its choice (also a lower
one after the setting shrank) in the next block, so following the updates is exact. Sizes are
capped at MAX_TABLE_SIZE, so memory stays bounded whatever a peer announces.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from hpack.exceptions import HPACKDecodingError
from hpack.hpack import decode_integer
from hpack.huffman_table import decode_huffman
from hpack.table import HeaderTable

HeaderList = List[Tuple[str, str]]

DEFAULT_TABLE_SIZE = 4096
# Real peers use 4 KiB, a few 64 KiB; a table size update beyond this is honoured only up to it.
MAX_TABLE_SIZE = 64 * 1024
_STATIC = HeaderTable.STATIC_TABLE_LENGTH


class _Unknown(Exception):
    """A field of the block whose name or value the state known here cannot tell."""


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class HpackReader:
    """One direction's decoding context: a dynamic table and whether it is known to be whole."""

    def __init__(self, synced: bool) -> None:
        """`synced`: the connection was seen from its start, so the table is known exactly. If
        not (joined mid-way), the table starts empty and as large as allowed, so that no entry
        the peer still holds is evicted here first."""
        self.table = HeaderTable()
        self.synced = synced
        self.lost = False
        self.table.maxsize = DEFAULT_TABLE_SIZE if synced else MAX_TABLE_SIZE
        self.errors = 0  # blocks that could not be parsed

    def lose(self) -> None:
        """A block of this direction was not decoded (too big, cut): the table is no longer known."""
        self.lost = True
        self.table.dynamic_entries.clear()
        self.table._current_size = 0  # the library has no public reset

    def decode(self, block: bytes) -> Tuple[HeaderList, int, bool]:
        """The fields of one header block, the number of fields that could not be told, and
        whether the block itself was malformed (then the fields are those decoded before)."""
        headers: HeaderList = []
        unknown = 0
        data = memoryview(block)
        pos = 0
        try:
            while pos < len(data):
                first = data[pos]
                if first & 0x80:  # indexed field
                    index, used = decode_integer(data[pos:], 7)
                    pos += used
                    try:
                        name, value = self._entry(index)
                        headers.append((_text(name), _text(value)))
                    except _Unknown:
                        unknown += 1
                elif first & 0xC0 == 0x40:  # literal with incremental indexing
                    pos, unknown = self._literal(data, pos, 6, True, headers, unknown)
                elif first & 0xE0 == 0x20:  # dynamic table size update
                    size, used = decode_integer(data[pos:], 5)
                    pos += used
                    if self.synced:
                        self.table.maxsize = min(size, MAX_TABLE_SIZE)
                else:  # literal without indexing / never indexed
                    pos, unknown = self._literal(data, pos, 4, False, headers, unknown)
        except (HPACKDecodingError, ValueError, IndexError):
            self.errors += 1
            self.lose()
            return headers, unknown, True
        return headers, unknown, False

    # -- internals --------------------------------------------------------------------------------

    def _entry(self, index: int) -> Tuple[bytes, bytes]:
        if index == 0:
            raise HPACKDecodingError("index 0")
        if index > _STATIC and self.lost:
            raise _Unknown()
        try:
            name, value = self.table.get_by_index(index)
        except HPACKDecodingError:
            if self.synced and not self.lost:
                raise  # the whole table is known: a bad index is a malformed block
            raise _Unknown()
        return name, value

    def _literal(self, data: memoryview, pos: int, prefix: int, index_it: bool,
                 headers: HeaderList, unknown: int) -> Tuple[int, int]:
        name_index, used = decode_integer(data[pos:], prefix)
        pos += used
        name: Optional[bytes] = None
        name_known = True
        if name_index:
            try:
                name = self._entry(name_index)[0]
            except _Unknown:
                name_known = False
        else:
            name, pos = self._string(data, pos)
        value, pos = self._string(data, pos)
        if index_it:
            if name_known:
                self.table.add(name, value)
            else:
                self.lose()  # an entry of unknown size: eviction can no longer be followed
        if name_known:
            headers.append((_text(name), _text(value)))
        else:
            unknown += 1
        return pos, unknown

    @staticmethod
    def _string(data: memoryview, pos: int) -> Tuple[bytes, int]:
        huffman = data[pos] & 0x80
        length, used = decode_integer(data[pos:], 7)
        pos += used
        if pos + length > len(data):
            raise HPACKDecodingError("string runs past the block")
        raw = bytes(data[pos:pos + length])
        return (decode_huffman(raw) if huffman else raw), pos + length
