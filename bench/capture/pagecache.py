"""A page-cache load for ``pcpd capture``: write a file, read it back, delete it.

    python3 pagecache.py MIB [DIR]

Writing fills the page cache (file pages, order 0 and the large folios the
filesystem asks for), fsync writes them back, reading them finds them
cached, and unlinking frees them all at once, as a kernel build's object
files come and go.
"""

import os
import sys
import tempfile

CHUNK = 1 << 20


def main() -> None:
    mib = int(sys.argv[1])
    where = sys.argv[2] if len(sys.argv) > 2 else None
    fd, path = tempfile.mkstemp(prefix="pcpd-pagecache-", dir=where)
    try:
        block = b"p" * CHUNK
        for _ in range(mib):
            os.write(fd, block)
        os.fsync(fd)
        os.lseek(fd, 0, os.SEEK_SET)
        while os.read(fd, CHUNK):
            pass
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
