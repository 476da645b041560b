"""Write a directory as a gzipped cpio 'newc' archive (no cpio binary needed)."""
import gzip
import os
import stat
import sys


def entries(root):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames) + sorted(filenames):
            path = os.path.join(dirpath, name)
            yield os.path.relpath(path, root), path


def header(ino, st, name, size):
    fields = (ino, st.st_mode, 0, 0, 1, int(st.st_mtime), size, 0, 0, 0, 0, len(name) + 1, 0)
    return b'070701' + b''.join(b'%08X' % f for f in fields)


def pad(n):
    return b'\0' * ((4 - n % 4) % 4)


def main(root, out):
    with gzip.open(out, 'wb', compresslevel=6) as f:
        ino = 1
        for rel, path in list(entries(root)) + [('TRAILER!!!', None)]:
            name = rel.encode()
            if path is None:
                st = os.stat_result((0,) * 10)
                data = b''
            else:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    data = os.readlink(path).encode()
                elif stat.S_ISREG(st.st_mode):
                    with open(path, 'rb') as src:
                        data = src.read()
                else:
                    data = b''
            hdr = header(ino, st, name, len(data)) + name + b'\0'
            f.write(hdr + pad(len(hdr)) + data + pad(len(data)))
            ino += 1


if __name__ == '__main__':
    main(*sys.argv[1:3])
