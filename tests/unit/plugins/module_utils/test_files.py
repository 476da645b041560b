# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""write_atomic: every failure to put the file in place is an OSError, and nothing is left behind.

ansible-core's atomic_move raises a bare ``Exception`` (chained from the OSError) when its final
rename fails, e.g. onto an immutable file (``chattr +i``): the callers turn OSError into "writing PATH
failed, nothing was changed" and put earlier files back, so anything else was a traceback that left a
half-written set of saved files (issue 19, review).
"""

from __future__ import annotations

import errno
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _files


def _bare(exc):
    try:
        raise exc
    except OSError as cause:
        try:
            raise Exception("Unable to make 'x' into to 'y', failed final rename") from cause
        except Exception as wrapped:  # pylint: disable=broad-exception-caught
            return wrapped


class Module:
    def __init__(self, failure=None):
        self.failure = failure

    def atomic_move(self, src, dest):
        if self.failure is not None:
            raise self.failure
        os.replace(src, dest)


CASES = [
    # (what atomic_move raises, the errno write_atomic raises, or None when it succeeds)
    (None, None),
    (OSError(errno.EROFS, 'Read-only file system'), errno.EROFS),
    (OSError(errno.ENOSPC, 'No space left on device'), errno.ENOSPC),
    (_bare(OSError(errno.EPERM, 'Operation not permitted')), errno.EPERM),
    (_bare(OSError(errno.EBUSY, 'Device or resource busy')), errno.EBUSY),
    (Exception('Could not replace'), errno.EIO),
]


@pytest.mark.parametrize('failure, expected', CASES)
def test_a_failed_move_is_an_oserror_and_leaves_no_temporary_file(tmp_path, failure, expected):
    path = tmp_path / 'kvmnet-nat.v4'
    path.write_text('old\n')
    module = Module(failure)
    if expected is None:
        _files.write_atomic(module, str(path), 'new\n', 0o600)
        assert path.read_text() == 'new\n'
        assert (os.stat(path).st_mode & 0o7777) == 0o600
    else:
        with pytest.raises(OSError) as info:
            _files.write_atomic(module, str(path), 'new\n', 0o600)
        assert info.value.errno == expected
        if not isinstance(failure, OSError):          # translated here: it names the file
            assert info.value.filename == str(path)
        assert path.read_text() == 'old\n'
    assert sorted(os.listdir(tmp_path)) == ['kvmnet-nat.v4']


def test_bytes_are_written_as_they_are(tmp_path):
    path = tmp_path / 'f'
    _files.write_atomic(Module(), str(path), b'\x00\xffraw', 0o644)
    assert path.read_bytes() == b'\x00\xffraw'
