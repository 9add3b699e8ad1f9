"""Child process of the crash test: write to a qcow2 image until killed.

Usage: python crash_writer.py IMAGE SEED. Prints "ready" once it has started.
"""

from __future__ import annotations

import random
import sys

from kvmlite.backends.block.qcow2 import Qcow2Backend


def main() -> None:
    path, seed = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(seed)
    q = Qcow2Backend(path)
    print("ready", flush=True)
    size = q.size
    while True:
        op = rnd.random()
        off = rnd.randrange(0, size, 512)
        n = min(rnd.choice([512, 4096, 65536, 300_000]) // 512 * 512, size - off)
        if op < 0.75:
            q.write(off, bytes([rnd.randrange(1, 256)]) * n)
        elif op < 0.9:
            q.write_zeroes(off, n)
        elif op < 0.97:
            q.discard(off, n)
        else:
            q.flush()


if __name__ == "__main__":
    main()
