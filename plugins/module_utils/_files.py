# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""How every kvmnet.nat module writes a file: PRIVATE to this collection, no stable API."""

from __future__ import annotations

import errno
import os
import tempfile


def write_atomic(module, path, text, mode, make_dirs=False):
    """Write ``text`` to ``path`` through a new temporary file in the same directory (``O_EXCL``, a
    random name: nothing planted next to the file is ever followed), renamed into place with
    ``module.atomic_move``, then given ``mode``. ``text`` may be bytes (a file put back as it was)."""
    directory = os.path.dirname(path)
    if make_dirs and not os.path.isdir(directory):
        os.makedirs(directory, 0o755)
    handle, tmp = tempfile.mkstemp(prefix='.kvmnet-nat.', dir=directory)
    try:
        with os.fdopen(handle, 'wb' if isinstance(text, bytes) else 'w') as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        _move(module, tmp, path)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)
    os.chmod(path, mode)


def _move(module, tmp, path):
    """``module.atomic_move``, whose failure is always an OSError here: ansible-core raises a bare
    ``Exception`` (from the OSError) when the final rename fails, e.g. onto an immutable file, and every
    caller of write_atomic turns an OSError into "writing PATH failed" (never a traceback)."""
    try:
        module.atomic_move(tmp, path)
    except OSError:
        raise
    except Exception as exc:  # pylint: disable=broad-exception-caught
        cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else None
        raise OSError(cause.errno if cause else errno.EIO, '%s (%s)' % (cause.strerror if cause else 'rename failed', exc),
                      path) from exc
