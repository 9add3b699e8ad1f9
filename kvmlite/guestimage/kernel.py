"""Build kvmlite's default guest kernel from Debian's linux-source-6.1.

Recipe: ``make tinyconfig``, append ``minimal.config``, ``make olddefconfig``,
check that every option of the fragment took effect (Kconfig silently drops
options whose dependencies are unmet), apply ``patches/*.patch`` (each
acts only under the ``pvm_quirks`` / ``skip_builtin_param_sysfs`` boot
options, see hostquirks.py), then ``make vmlinux bzImage``.

Cache layout under ``<cache>/kernel/`` (``<cache>`` is cache.default_cache_dir()):

- ``linux-source-6.1/``  the source tree, extracted once per tarball
  (``.kvmlite-source-id`` names the tarball it came from); the patches
  currently applied are copied into ``.kvmlite-patches/`` so that a new
  patch set is applied by reversing the old one, not by re-extracting;
- ``config-scratch/``    where tinyconfig + fragment + olddefconfig run;
- ``build/``             the out-of-tree (``O=``) build directory, reused
  so that a patch or config change is an incremental rebuild;
- ``<key>/``             finished results: ``vmlinux``, ``bzImage``,
  ``config``, ``version``. ``<key>`` hashes (tarball name and size, config
  fragment, patches): a finished key is returned without running make;
- ``build.log``          output of the last configure/build;
- ``objects.count``      objects the last build left, the progress bar's 100 %;
- ``.lock``              flock held while the tree is in use.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from kvmlite.errors import ImageError
from kvmlite.guestimage.cache import content_key, default_cache_dir, locked
from kvmlite.guestimage.progress import BuildProgress, count_objects, expected_objects

SOURCE_TARBALL = Path("/usr/src/linux-source-6.1.tar.xz")
CONFIG_FRAGMENT = Path(__file__).with_name("minimal.config")
PATCH_DIR = Path(__file__).with_name("patches")

_SET_RE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
_UNSET_RE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
_SOURCE_ID = ".kvmlite-source-id"
_APPLIED = ".kvmlite-patches"
# Bump when the build recipe itself changes, so old results are not reused.
_RECIPE_VERSION = b"kvmlite-kernel-recipe-1"
#: How many objects the last build left in build/ (kvmlite/guestimage/progress.py).
OBJECT_COUNT_FILE = "objects.count"


@dataclass(frozen=True)
class KernelImages:
    """The built kernel: a PVH-bootable ELF, the bzImage, and its release string."""

    vmlinux: Path
    bzimage: Path
    version: str


# -- config checking (pure: unit tested without a kernel tree) -------------


def parse_config(text: str) -> dict[str, str | None]:
    """Map each CONFIG_ symbol of a .config/fragment to its value, or None
    for ``# CONFIG_X is not set``. Other comments and blank lines are skipped;
    anything else is an error naming the line."""
    result: dict[str, str | None] = {}
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if m := _SET_RE.match(line):
            result[m.group(1)] = m.group(2)
        elif m := _UNSET_RE.match(line):
            result[m.group(1)] = None
        elif line and not line.startswith("#"):
            raise ImageError(f"config line {lineno} is not a Kconfig assignment: {raw!r}")
    return result


def missing_options(fragment: str, config: str) -> list[str]:
    """Fragment lines that the final .config does not honour, as
    human-readable strings ("CONFIG_X=y (got: not set)")."""
    wanted = parse_config(fragment)
    have = parse_config(config)
    missing = []
    for sym, value in wanted.items():
        got = have.get(sym)
        if value is None:
            if got is not None and got != "n":
                missing.append(f"# {sym} is not set (got: {sym}={got})")
        elif got != value:
            shown = "not set" if got is None else got
            missing.append(f"{sym}={value} (got: {shown})")
    return missing


# -- the build --------------------------------------------------------------


class _Builder:
    def __init__(self, root: Path, progress: bool) -> None:
        self.root = root
        self.progress = progress
        self.src = root / "linux-source-6.1"
        self.build = root / "build"
        self.log = root / "build.log"
        self.jobs = len(os.sched_getaffinity(0)) or 1

    def say(self, msg: str) -> None:
        if self.progress:
            print(f"[kvmlite kernel] {msg}", file=sys.stderr, flush=True)

    def run(
        self, what: str, argv: list[str], cwd: Path, progress: BuildProgress | None = None
    ) -> None:
        """Run a build step, its output appended to build.log (and fed to ``progress``)."""
        with open(self.log, "ab") as log:
            log.write(f"\n### {what}: {' '.join(argv)}\n".encode())
            log.flush()
            if progress is None:
                returncode = subprocess.run(
                    argv, cwd=cwd, stdout=log, stderr=subprocess.STDOUT
                ).returncode
            else:
                with subprocess.Popen(
                    argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
                ) as proc:
                    assert proc.stdout is not None
                    for line in proc.stdout:
                        log.write(line)
                        progress.line(line)
                returncode = proc.returncode
                if returncode == 0:
                    progress.finish()
                else:
                    progress.abort()
        if returncode != 0:
            tail = self.log.read_text(errors="replace").splitlines()[-15:]
            raise ImageError(
                f"kernel {what} failed (exit {returncode}); full log: {self.log}\n"
                + "\n".join(tail)
            )

    def make(self, what: str, *targets: str, progress: BuildProgress | None = None) -> None:
        argv = ["make", f"O={self.build}", f"-j{self.jobs}", *targets]
        self.run(what, argv, self.src, progress)

    def ensure_source(self, tarball: Path, source_id: str) -> None:
        id_file = self.src / _SOURCE_ID
        if id_file.is_file() and id_file.read_text() == source_id:
            return
        self.say(f"extracting {tarball} into {self.src}")
        shutil.rmtree(self.src, ignore_errors=True)
        # A tree from another tarball leaves objects that do not match.
        shutil.rmtree(self.build, ignore_errors=True)
        tmp = self.root / ".extract.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.run("extraction", ["tar", "-xJf", str(tarball), "-C", str(tmp)], self.root)
        tops = list(tmp.iterdir())
        if len(tops) != 1 or not (tops[0] / "Makefile").is_file():
            raise ImageError(f"{tarball} does not hold one kernel source tree")
        tops[0].rename(self.src)
        tmp.rmdir()
        id_file.write_text(source_id)

    def sync_patches(self, patches: list[Path]) -> None:
        """Make the tree carry exactly ``patches``, in order."""
        applied_dir = self.src / _APPLIED
        applied = sorted(applied_dir.glob("*.patch")) if applied_dir.is_dir() else []
        same = [p.name for p in applied] == [p.name for p in patches] and all(
            a.read_bytes() == p.read_bytes() for a, p in zip(applied, patches, strict=True)
        )
        if same:
            return
        for old in reversed(applied):
            self.say(f"reverting {old.name}")
            self.run(
                f"revert of {old.name}",
                ["patch", "-p1", "-R", "-E", "--batch", "-i", str(old)],
                self.src,
            )
            old.unlink()
        applied_dir.mkdir(exist_ok=True)
        for p in patches:
            self.say(f"applying {p.name}")
            args = ["patch", "-p1", "-N", "-E", "--batch", "-i", str(p)]
            # A dry run first, so a patch that does not fit leaves no half-patched tree.
            self.run(f"patch {p.name} (dry run)", [*args, "--dry-run"], self.src)
            self.run(f"patch {p.name}", args, self.src)
            shutil.copyfile(p, applied_dir / p.name)

    def configure(self, fragment: str) -> str:
        """Produce build/.config, touching it only if it changes (a rewritten
        .config, even with the same content, costs a syncconfig and more).
        The config is made in a scratch O= directory for that reason."""
        scratch = self.root / "config-scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        self.say("configuring (tinyconfig + minimal.config, olddefconfig)")
        self.run("configuration (tinyconfig)", ["make", f"O={scratch}", "tinyconfig"], self.src)
        with open(scratch / ".config", "a") as f:
            f.write("\n" + fragment)
        self.run("configuration (olddefconfig)", ["make", f"O={scratch}", "olddefconfig"],
                 self.src)  # fmt: skip
        text = (scratch / ".config").read_text()
        if missing := missing_options(fragment, text):
            raise ImageError(
                "the kernel config lost options of minimal.config (their Kconfig "
                "dependencies are unmet; add the dependencies to the fragment):\n  "
                + "\n  ".join(missing)
            )
        self.build.mkdir(parents=True, exist_ok=True)
        final = self.build / ".config"
        if not final.is_file() or final.read_text() != text:
            final.write_text(text)
        return text


def _patches() -> list[Path]:
    return sorted(PATCH_DIR.glob("*.patch"))


def _cache_key(tarball: Path, fragment: bytes, patches: list[Path]) -> str:
    parts = [_RECIPE_VERSION, tarball.name.encode(), str(tarball.stat().st_size).encode(), fragment]
    for p in patches:
        parts += [p.name.encode(), p.read_bytes()]
    return content_key(parts)


def _finished(out: Path) -> KernelImages | None:
    vmlinux, bzimage, version = out / "vmlinux", out / "bzImage", out / "version"
    if vmlinux.is_file() and bzimage.is_file() and version.is_file():
        return KernelImages(vmlinux, bzimage, version.read_text().strip())
    return None


def build_kernel(
    cache_dir: Path | None = None, *, progress: bool = True, tarball: Path = SOURCE_TARBALL
) -> KernelImages:
    """Build (or find in the cache) the default guest kernel."""
    if not tarball.is_file():
        raise ImageError(
            f"kernel source {tarball} not found: apt-get install linux-source-6.1 "
            "(and build-essential bc flex bison libelf-dev lz4 to build it)"
        )
    for tool in ("make", "gcc", "patch", "flex", "bison", "bc", "lz4"):
        if shutil.which(tool) is None:
            raise ImageError(
                f"'{tool}' is needed to build the guest kernel: "
                "apt-get install build-essential bc flex bison libelf-dev lz4"
            )
    root = (cache_dir or default_cache_dir()) / "kernel"
    fragment = CONFIG_FRAGMENT.read_bytes()
    patches = _patches()
    out = root / _cache_key(tarball, fragment, patches)
    if found := _finished(out):
        return found
    with locked(root / ".lock"):
        if found := _finished(out):  # another process built it meanwhile
            return found
        b = _Builder(root, progress)
        b.log.write_bytes(b"")
        start = time.monotonic()
        b.ensure_source(tarball, f"{tarball.name} {tarball.stat().st_size}\n")
        b.sync_patches(patches)
        config = b.configure(fragment.decode())
        b.say(f"building vmlinux bzImage with -j{b.jobs} (log: {b.log}; minutes on first build)")
        count_file = root / OBJECT_COUNT_FILE
        bar = BuildProgress(expected_objects(count_file)) if progress else None
        b.make("build", "vmlinux", "bzImage", progress=bar)
        count_file.write_text(f"{count_objects(b.build)}\n")
        version = (b.build / "include/config/kernel.release").read_text().strip()
        tmp = root / f".{out.name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        shutil.copyfile(b.build / "vmlinux", tmp / "vmlinux")
        shutil.copyfile(b.build / "arch/x86/boot/bzImage", tmp / "bzImage")
        (tmp / "config").write_text(config)
        (tmp / "version").write_text(version + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        b.say(f"kernel {version} ready in {time.monotonic() - start:.0f} s: {out}")
    found = _finished(out)
    assert found is not None
    return found
