"""A kernel-build-like load for ``pcpd capture``: ``make -j`` of generated C files, then clean.

    python3 build.py FILES [JOBS]

Writes FILES C sources (each a few hundred functions) into a temporary
directory and runs ``make -jJOBS`` (default 2) on them: many short-lived
processes (make, gcc, cc1, as, ld), their anonymous memory and page tables,
and the page cache of sources and objects; the directory is removed at the
end, which frees that page cache.  A kernel build is the same mix, only
larger.
"""

import os
import shutil
import subprocess
import sys
import tempfile

FUNCTIONS = 200


def source(index: int) -> str:
    body = "\n".join(
        f"int f{index}_{i}(int x) {{ int s = 0; for (int j = 0; j < x; j++) s += j * {i} ^ (s >> 3); "
        f"return s; }}" for i in range(FUNCTIONS))
    return body + "\n"


def main() -> None:
    files = int(sys.argv[1])
    jobs = sys.argv[2] if len(sys.argv) > 2 else "2"
    where = tempfile.mkdtemp(prefix="pcpd-build-")
    try:
        objects = []
        for i in range(files):
            with open(os.path.join(where, f"u{i}.c"), "w") as f:
                f.write(source(i))
            objects.append(f"u{i}.o")
        with open(os.path.join(where, "Makefile"), "w") as f:
            f.write(f"all: lib.a\nlib.a: {' '.join(objects)}\n\tar rcs $@ $^\n"
                    "%.o: %.c\n\tgcc -O2 -c $< -o $@\n")
        subprocess.run(["make", "-s", f"-j{jobs}"], cwd=where, check=True)
    finally:
        shutil.rmtree(where)


if __name__ == "__main__":
    main()
