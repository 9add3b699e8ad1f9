"""CD-ROM media on the host: an ISO image file, a directory made into one, or none.

``open_medium(spec)`` is where ``--cdrom`` values become block backends:

* ``''``: an empty drive (None);
* a file: opened read-only as a raw image (an ISO 9660 image, normally);
* a directory: an ISO 9660 image of its tree, built by pycdlib with Rock
  Ridge (POSIX names, modes, long names) and Joliet (names Windows reads)
  into an unlinked temporary file, so nothing is left behind when the
  backend is closed. ISO 9660's own names are generated (``D0000001``,
  ``F0000002.``) as Linux and Windows read the Rock Ridge or Joliet ones.
  Symbolic links to files are stored as the files; links to directories,
  sockets and devices are left out. Joliet cannot hold names over 64
  characters or with ``*/:;?\\``: such entries are in the Rock Ridge tree only.

A path that is not there, a directory or file that cannot be read: an
``ImageError`` naming it, and nothing opened.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from kvmlite.backends.block.base import BlockBackend
from kvmlite.backends.block.raw import RawBackend
from kvmlite.errors import ImageError

JOLIET_MAX = 64
_JOLIET_BAD = set('*/:;?\\"<>|')
#: A DVD holds 4.7 GB; a bigger tree is most likely a wrong directory.
MAX_TREE_BYTES = 8 << 30


def open_medium(spec: str, *, tmpdir: str | None = None) -> BlockBackend | None:
    """The medium for ``--cdrom SPEC``: None for '', else a read-only backend."""
    if spec == "":
        return None
    path = Path(spec)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise ImageError(f"{spec}: no such CD-ROM image or directory; check the path") from None
    except OSError as e:
        raise ImageError(f"{spec}: cannot use it as a CD-ROM: {e.strerror}") from None
    if stat.S_ISDIR(st.st_mode):
        return iso_from_directory(path, tmpdir=tmpdir)
    return RawBackend(str(path), read_only=True)


def _joliet_ok(name: str) -> bool:
    return len(name) <= JOLIET_MAX and not (set(name) & _JOLIET_BAD)


def iso_from_directory(root: Path, *, tmpdir: str | None = None) -> BlockBackend:
    """Build an ISO 9660 + Rock Ridge + Joliet image of ``root``; returns it opened."""
    import pycdlib  # noqa: PLC0415 - only --cdrom DIR needs it

    iso = pycdlib.PyCdlib()
    label = "".join(c for c in root.resolve().name.upper() if c.isalnum() or c == "_")[:32]
    iso.new(interchange_level=4, joliet=3, rock_ridge="1.09", vol_ident=label or "CDROM")
    counter = 0
    total = 0
    files = []

    def fail(e: OSError) -> None:
        raise ImageError(f"{e.filename or root}: cannot read it for the CD-ROM: {e.strerror}")

    # (host dir, iso path, joliet path or None)
    stack: list[tuple[Path, str, str | None]] = [(root, "", "")]
    try:
        while stack:
            host, iso_dir, jol_dir = stack.pop()
            try:
                entries = sorted(os.scandir(host), key=lambda e: e.name)
            except OSError as e:
                fail(e)
            for entry in entries:
                counter += 1
                name = entry.name
                jol = f"{jol_dir}/{name}" if jol_dir is not None and _joliet_ok(name) else None
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                    is_file = entry.is_file(follow_symlinks=True)
                except OSError as e:
                    fail(e)
                if is_dir:
                    iso_path = f"{iso_dir}/D{counter:07X}"
                    iso.add_directory(iso_path, rr_name=name, joliet_path=jol)
                    stack.append((Path(entry.path), iso_path, jol))
                elif is_file:
                    size = os.stat(entry.path).st_size
                    total += size
                    if total > MAX_TREE_BYTES:
                        raise ImageError(f"{root}: more than {MAX_TREE_BYTES >> 30} GiB of files")
                    try:
                        fh = open(entry.path, "rb")  # noqa: SIM115 - closed after write_fp
                    except OSError as e:
                        fail(e)
                    files.append(fh)
                    iso.add_fp(
                        fh, size, f"{iso_dir}/F{counter:07X}.;1", rr_name=name, joliet_path=jol
                    )
        fd, tmp = tempfile.mkstemp(prefix="kvmlite-cdrom-", suffix=".iso", dir=tmpdir)
        try:
            with os.fdopen(fd, "wb") as out:
                iso.write_fp(out)
            return RawBackend(tmp, read_only=True)
        finally:
            os.unlink(tmp)  # the backend keeps its descriptor; nothing is left on disk
    except pycdlib.pycdlibexception.PyCdlibException as e:
        raise ImageError(f"{root}: cannot make an ISO 9660 image of it: {e}") from None
    finally:
        for fh in files:
            fh.close()
        iso.close()
