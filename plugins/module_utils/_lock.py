# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The host-wide lock of kvmnet.nat: PRIVATE to this collection, no stable API.

Read -> plan -> apply must not interleave with another run (a second playbook, or the libvirt
hook's kvmnet-nat-restore): two runs that both see "jump missing" both insert one. Every writer
takes an exclusive flock(2) on one file under /run; kvmnet-nat-restore takes the same lock with
flock(1). The wait is bounded.

The lock is a regular file with one link, or absent (then a writer creates it). Anything else at its
path (a symlink, even to a regular file; a FIFO, which would block kvmnet-nat-restore's open for ever; a
directory, socket or device; a hard link to another file, which the holder's line would overwrite) is
refused at once, by the module and by kvmnet-nat-restore alike, and nothing is changed.

Check mode writes nothing on the host: it takes the lock only when the file already exists (opened
read-only, the holder's line left as it is), and does without it when it does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time

DEFAULT_PATH = '/run/kvmnet-nat.lock'


class LockError(Exception):
    pass


class LockTimeout(LockError):
    pass


def _holder(fd):
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return os.read(fd, 200).decode('ascii', 'replace').strip() or 'unknown holder'
    except OSError:
        return 'unknown holder'


KINDS = ((stat.S_ISLNK, 'a symlink'), (stat.S_ISFIFO, 'a FIFO'), (stat.S_ISDIR, 'a directory'),
         (stat.S_ISSOCK, 'a socket'), (stat.S_ISCHR, 'a character device'), (stat.S_ISBLK, 'a block device'))


def problem(path, st):
    """Why the file ``st`` (lstat or fstat of ``path``) cannot be the lock, or None when it can."""
    if stat.S_ISREG(st.st_mode):
        if st.st_nlink != 1:
            return ('the host lock %s is not a regular file of its own (it has %d hard links); nothing was changed. '
                    'Remove it (kvmnet.nat creates it again)' % (path, st.st_nlink))
        return None
    kind = next((name for test, name in KINDS if test(st.st_mode)), 'something else')
    return ('the host lock %s is not a regular file (it is %s); nothing was changed. Remove it (kvmnet.nat creates '
            'it again)' % (path, kind))


def _open(path, write):
    """The descriptor of the lock (None: absent, and not to be created), checked before and after the open."""
    try:
        found = problem(path, os.lstat(path))
    except FileNotFoundError:
        if not write:
            return None
        found = None
    except OSError as exc:
        raise LockError('cannot read the host lock %s: %s; nothing was changed' % (path, exc.strerror or exc))
    if found:
        raise LockError(found)
    flags = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_RDWR | os.O_CREAT if write else os.O_RDONLY)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise LockError('cannot open the host lock %s: %s; nothing was changed' % (path, exc.strerror or exc))
    found = problem(path, os.fstat(fd))       # swapped between the lstat and the open
    if found:
        os.close(fd)
        raise LockError(found)
    return fd


@contextlib.contextmanager
def host_lock(path, timeout, who, poll=0.1, write=True):
    """Hold the exclusive lock on ``path`` for the block; LockTimeout after ``timeout`` seconds.

    ``write=False`` (check mode): no file is created and the holder's line is not written; when the
    file does not exist, the block runs without the lock."""
    fd = _open(path, write)
    if fd is None:
        yield
        return
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout('another kvmnet.nat run holds the host lock %s (%s) and did not finish '
                                      'within %s s; nothing was changed. Run again when it is done (a playbook, '
                                      'or the libvirt hook running kvmnet-nat-restore)' % (path, _holder(fd), timeout))
                time.sleep(poll)
            except OSError as exc:
                raise LockError('cannot lock the host lock %s: %s; nothing was changed' % (path, exc.strerror or exc))
        if write:
            os.ftruncate(fd, 0)
            os.pwrite(fd, ('pid %d %s\n' % (os.getpid(), who)).encode('ascii', 'replace'), 0)
        yield
    finally:
        os.close(fd)    # closing the descriptor releases the lock
