"""qcow2 header and header extensions (QEMU docs/interop/qcow2.txt, "Header" and
"Header extensions").

All fields are big-endian. Version 2 headers are 72 bytes; version 3 adds the
feature bitmaps, refcount_order and header_length (104 bytes, or 112 with the
compression type byte). Everything read here comes from a file and is hostile:
every offset and size is range-checked before anything is built on it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from kvmlite.errors import ImageError

MAGIC = 0x514649FB  # "QFI\xfb"
V2_HEADER_LEN = 72
V3_HEADER_LEN = 104
HEADER_LEN_WITH_COMPRESSION = 112
_V2 = struct.Struct(">IIQIIQIIQQIIQ")
_V3 = struct.Struct(">QQQII")

# Incompatible feature bits.
INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
# What this implementation can open: the rest is refused with a clear error.
INCOMPAT_SUPPORTED = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_COMPRESSION
# Compatible feature bits.
COMPAT_LAZY_REFCOUNTS = 1 << 0
# Autoclear bits name extensions a writer that does not maintain them must clear.
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1

# Header extension types.
EXT_END = 0
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1
COMPRESSION_NAMES = {COMPRESSION_ZLIB: "zlib", COMPRESSION_ZSTD: "zstd"}

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_BACKING_NAME = 1023  # QEMU's limit
MAX_L1_BYTES = 32 << 20  # QEMU's QCOW_MAX_L1_SIZE
MAX_REFTABLE_BYTES = 8 << 20  # QEMU's QCOW_MAX_REFTABLE_SIZE
MAX_SNAPSHOTS = 65536
MAX_VIRTUAL_SIZE = 1 << 61

_KNOWN_INCOMPAT = {
    0: "dirty bit",
    1: "corrupt bit",
    2: "external data file",
    3: "compression type",
    4: "extended L2 entries (subclusters)",
}


@dataclass
class Extension:
    """A header extension kept verbatim so rewriting the header preserves it."""

    type: int
    data: bytes


@dataclass
class Header:
    """The decoded header; field names follow qcow2.txt."""

    version: int
    backing_file_offset: int
    backing_file_size: int
    cluster_bits: int
    size: int
    crypt_method: int
    l1_size: int
    l1_table_offset: int
    refcount_table_offset: int
    refcount_table_clusters: int
    nb_snapshots: int
    snapshots_offset: int
    incompatible_features: int = 0
    compatible_features: int = 0
    autoclear_features: int = 0
    refcount_order: int = 4
    header_length: int = V2_HEADER_LEN
    compression_type: int = COMPRESSION_ZLIB
    extensions: list[Extension] = field(default_factory=list)
    backing_file: str | None = None
    feature_names: dict[tuple[int, int], str] = field(default_factory=dict)

    @property
    def cluster_size(self) -> int:
        return 1 << self.cluster_bits

    @property
    def backing_format(self) -> str | None:
        for ext in self.extensions:
            if ext.type == EXT_BACKING_FORMAT:
                return ext.data.decode("utf-8", "replace")
        return None

    def set_backing_format(self, fmt: str | None) -> None:
        self.extensions = [e for e in self.extensions if e.type != EXT_BACKING_FORMAT]
        if fmt:
            self.extensions.insert(0, Extension(EXT_BACKING_FORMAT, fmt.encode()))

    def pack(self) -> bytes:
        """Header + extensions + backing file name, as written to cluster 0.

        The backing file name goes right after the end-of-extensions marker and
        ``backing_file_offset``/``size`` are recomputed to point at it.
        """
        if self.version == 2:
            length = V2_HEADER_LEN
        else:
            length = max(self.header_length, HEADER_LEN_WITH_COMPRESSION)
        exts = bytearray()
        for ext in self.extensions:
            exts += struct.pack(">II", ext.type, len(ext.data)) + ext.data
            exts += bytes(-len(ext.data) % 8)
        exts += struct.pack(">II", EXT_END, 0)
        name = self.backing_file.encode() if self.backing_file else b""
        self.backing_file_offset = length + len(exts) if name else 0
        self.backing_file_size = len(name)
        out = bytearray(
            _V2.pack(
                MAGIC,
                self.version,
                self.backing_file_offset,
                self.backing_file_size,
                self.cluster_bits,
                self.size,
                self.crypt_method,
                self.l1_size,
                self.l1_table_offset,
                self.refcount_table_offset,
                self.refcount_table_clusters,
                self.nb_snapshots,
                self.snapshots_offset,
            )
        )
        if self.version >= 3:
            self.header_length = length
            out += _V3.pack(
                self.incompatible_features,
                self.compatible_features,
                self.autoclear_features,
                self.refcount_order,
                length,
            )
            tail = bytes([self.compression_type]) if length > V3_HEADER_LEN else b""
            out += tail + bytes(length - len(out) - len(tail))
        out += exts + name
        if len(out) > self.cluster_size:
            raise ImageError(
                "the header, its extensions and the backing file name do not fit in one "
                f"cluster ({self.cluster_size} bytes); use a shorter backing file name"
            )
        return bytes(out)


def parse_header(buf: bytes, file_size: int, name: str = "image") -> Header:
    """Decode and validate a header from the start of the file (``buf``: cluster 0)."""
    if len(buf) < V2_HEADER_LEN:
        raise ImageError(f"{name}: file is too short for a qcow2 header; it is truncated")
    f = _V2.unpack_from(buf)
    if f[0] != MAGIC:
        raise ImageError(f"{name}: not a qcow2 image (bad magic)")
    h = Header(*f[1:])
    if h.version not in (2, 3):
        raise ImageError(f"{name}: qcow2 version {h.version} is not supported (only 2 and 3)")
    if not MIN_CLUSTER_BITS <= h.cluster_bits <= MAX_CLUSTER_BITS:
        raise ImageError(
            f"{name}: cluster size 2^{h.cluster_bits} is out of range (512 B to 2 MiB)"
        )
    cs = h.cluster_size
    if h.version >= 3:
        if len(buf) < V3_HEADER_LEN:
            raise ImageError(f"{name}: version 3 header is truncated")
        (
            h.incompatible_features,
            h.compatible_features,
            h.autoclear_features,
            h.refcount_order,
            h.header_length,
        ) = _V3.unpack_from(buf, V2_HEADER_LEN)
        if h.header_length < V3_HEADER_LEN or h.header_length % 8 or h.header_length > cs:
            raise ImageError(f"{name}: invalid header_length {h.header_length}")
        if h.header_length > V3_HEADER_LEN:
            if len(buf) < V3_HEADER_LEN + 1:
                raise ImageError(f"{name}: header is truncated")
            h.compression_type = buf[V3_HEADER_LEN]
    if h.refcount_order > 6:
        raise ImageError(f"{name}: refcount_order {h.refcount_order} is invalid (maximum 6)")
    if h.crypt_method:
        raise ImageError(f"{name}: encrypted qcow2 images are not supported")
    if h.size > MAX_VIRTUAL_SIZE:
        raise ImageError(f"{name}: virtual size {h.size} is too large")
    h.extensions, h.feature_names = _parse_extensions(h, buf, name)
    _check_features(h, name)
    if h.compression_type not in COMPRESSION_NAMES:
        raise ImageError(f"{name}: unknown compression type {h.compression_type}")
    if h.compression_type != COMPRESSION_ZLIB and not h.incompatible_features & (
        INCOMPAT_COMPRESSION
    ):
        raise ImageError(f"{name}: compression type set without its incompatible feature bit")
    _check_tables(h, file_size, name)
    if h.backing_file_offset:
        end = h.backing_file_offset + h.backing_file_size
        if h.backing_file_size > MAX_BACKING_NAME or end > cs or end > len(buf):
            raise ImageError(f"{name}: backing file name lies outside the header cluster")
        raw = buf[h.backing_file_offset : end]
        try:
            h.backing_file = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ImageError(f"{name}: backing file name is not valid UTF-8") from None
        if "\0" in h.backing_file:
            raise ImageError(f"{name}: backing file name contains a NUL byte")
    return h


def _parse_extensions(
    h: Header, buf: bytes, name: str
) -> tuple[list[Extension], dict[tuple[int, int], str]]:
    exts: list[Extension] = []
    names: dict[tuple[int, int], str] = {}
    pos = V2_HEADER_LEN if h.version == 2 else h.header_length
    limit = min(len(buf), h.cluster_size)
    if h.backing_file_offset and h.backing_file_offset > pos:
        limit = min(limit, h.backing_file_offset)
    while True:
        if pos + 8 > limit:
            # No end marker before the limit: QEMU accepts a header that simply ends.
            break
        etype, elen = struct.unpack_from(">II", buf, pos)
        pos += 8
        if etype == EXT_END:
            break
        if pos + elen > limit:
            raise ImageError(f"{name}: header extension 0x{etype:08x} runs past the header")
        data = bytes(buf[pos : pos + elen])
        pos += (elen + 7) & ~7
        if etype == EXT_FEATURE_TABLE:
            for i in range(0, len(data) - 47, 48):
                ftype, bit = data[i], data[i + 1]
                label = data[i + 2 : i + 48].split(b"\0")[0]
                names[(ftype, bit)] = label.decode("ascii", "replace")
            continue  # only used for error messages; not written back
        if etype in (EXT_CRYPTO, EXT_DATA_FILE):
            raise ImageError(f"{name}: encrypted or external-data-file images are not supported")
        exts.append(Extension(etype, data))
    return exts, names


def _check_features(h: Header, name: str) -> None:
    unknown = h.incompatible_features & ~INCOMPAT_SUPPORTED
    if not unknown:
        return
    bits = [bit for bit in range(64) if unknown & (1 << bit)]
    what = []
    for bit in bits[:MAX_FEATURES_NAMED]:
        # The image's own feature table names them: file data, so short and printable.
        label = _printable(_KNOWN_INCOMPAT.get(bit) or h.feature_names.get((0, bit)) or "unknown")
        what.append(f"bit {bit} ({label})")
    if len(bits) > MAX_FEATURES_NAMED:
        what.append(f"and {len(bits) - MAX_FEATURES_NAMED} more")
    raise ImageError(
        f"{name}: image uses incompatible features kvmlite does not support: "
        f"{', '.join(what)}; convert it with 'qemu-img convert -O qcow2' to a plain image"
    )


#: How many unsupported features an error names (64 of 46-byte names made 1.5 KB+).
MAX_FEATURES_NAMED = 4
MAX_LABEL_CHARS = 32


def _printable(label: str) -> str:
    """``label`` with anything but printable ASCII escaped, cut to MAX_LABEL_CHARS."""
    out = "".join(c if " " <= c <= "~" else f"\\x{ord(c):02x}" for c in label)
    return out if len(out) <= MAX_LABEL_CHARS else out[: MAX_LABEL_CHARS - 3] + "..."


def _check_tables(h: Header, file_size: int, name: str) -> None:
    cs = h.cluster_size
    if h.l1_size * 8 > MAX_L1_BYTES:
        raise ImageError(f"{name}: L1 table of {h.l1_size} entries is too large")
    l2_entries = cs // 8
    needed = -(-h.size // (cs * l2_entries))
    if h.l1_size < needed:
        raise ImageError(f"{name}: L1 table too small ({h.l1_size} < {needed}) for the size")
    _check_area(h.l1_table_offset, h.l1_size * 8, cs, file_size, f"{name}: L1 table")
    if h.refcount_table_clusters == 0 or h.refcount_table_clusters * cs > MAX_REFTABLE_BYTES:
        raise ImageError(f"{name}: refcount table size {h.refcount_table_clusters} is invalid")
    _check_area(
        h.refcount_table_offset,
        h.refcount_table_clusters * cs,
        cs,
        file_size,
        f"{name}: refcount table",
    )
    if h.nb_snapshots > MAX_SNAPSHOTS:
        raise ImageError(f"{name}: too many snapshots ({h.nb_snapshots})")
    if h.nb_snapshots:
        _check_area(h.snapshots_offset, 40, cs, file_size, f"{name}: snapshot table")


def _check_area(offset: int, length: int, cs: int, file_size: int, what: str) -> None:
    if length == 0:
        return
    if offset % cs or offset == 0 or offset + length > file_size:
        raise ImageError(
            f"{what} at offset {offset} (length {length}) is misaligned or outside the "
            f"file ({file_size} bytes); the image is damaged"
        )
