# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The host-wide lock of kvmnet.nat: PRIVATE to this collection, no stable API.

Read -> plan -> apply must not interleave with another run (a second playbook, or the libvirt
hook's kvmnet-nat-restore): two runs that both see "jump missing" both insert one. Every writer
takes an exclusive flock(2) on one file under /run; kvmnet-nat-restore takes the same lock with
flock(1). The wait is bounded.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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


@contextlib.contextmanager
def host_lock(path, timeout, who, poll=0.1):
    """Hold the exclusive lock on ``path`` for the block; LockTimeout after ``timeout`` seconds."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise LockError('cannot open the host lock %s: %s; nothing was changed' % (path, exc.strerror or exc))
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
        os.ftruncate(fd, 0)
        os.pwrite(fd, ('pid %d %s\n' % (os.getpid(), who)).encode('ascii', 'replace'), 0)
        yield
    finally:
        os.close(fd)    # closing the descriptor releases the lock
