# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The host lock: a regular file of its own or nothing (issue 19); check mode writes nothing."""

from __future__ import annotations

import os
import signal
import socket

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _lock
from ansible_collections.kvmnet.nat.plugins.modules import forwards as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes


def make(kind, path, tmp_path):
    """Put ``kind`` at ``path``; returns what must still hold afterwards (a file nothing may create or write)."""
    other = tmp_path / 'other'
    if kind == 'fifo':
        os.mkfifo(path)
    elif kind == 'dangling symlink':
        os.symlink(str(other), path)
    elif kind == 'symlink to a file':
        other.write_text('precious\n')
        os.symlink(str(other), path)
    elif kind == 'directory':
        os.mkdir(path)
    elif kind == 'socket':
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(path)
        sock.close()
    elif kind == 'hard link':
        other.write_text('precious\n')
        os.link(str(other), path)
    else:
        raise AssertionError(kind)
    return other


KINDS = {
    'fifo': 'is not a regular file (it is a FIFO)',
    'dangling symlink': 'is not a regular file (it is a symlink)',
    'symlink to a file': 'is not a regular file (it is a symlink)',
    'directory': 'is not a regular file (it is a directory)',
    'socket': 'is not a regular file (it is a socket)',
    'hard link': 'is not a regular file of its own (it has 2 hard links)',
}


@pytest.fixture
def bounded():
    """Fail a test that blocks (a FIFO's open) instead of hanging the run."""
    def expired(_signum, _frame):
        raise AssertionError('blocked for more than 5 s')
    old = signal.signal(signal.SIGALRM, expired)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.mark.parametrize('write', [True, False], ids=['apply', 'check'])
@pytest.mark.parametrize('kind, expected', KINDS.items(), ids=list(KINDS))
def test_anything_but_a_regular_file_of_its_own_is_refused_at_once(tmp_path, bounded, kind, expected, write):
    path = str(tmp_path / 'l')                     # short: a socket's name has a length limit
    other = make(kind, path, tmp_path)
    before = other.read_text() if other.exists() else None
    with pytest.raises(_lock.LockError) as info:
        with _lock.host_lock(path, 1, 'test', write=write):
            raise AssertionError('the lock was taken')
    assert str(info.value) == 'the host lock %s %s; nothing was changed. Remove it (kvmnet.nat creates it again)' % (
        path, expected)
    assert (other.read_text() if other.exists() else None) == before      # nothing created or written through it


@pytest.mark.parametrize('kind', list(KINDS))
def test_the_module_refuses_it_before_reading_any_rule(tmp_path, bounded, kind):
    path = str(tmp_path / 'l')
    make(kind, path, tmp_path)
    module = fakes.FakeModule({'forwards': [], 'check_listeners': False, 'public_ip': None, 'public_ip6': None,
                               'in_interface': None, 'state': 'absent', 'chain_prefix': 'KVMNAT', 'persist_path': None,
                               'lock_timeout': 1, 'lock_path': path, 'return_details': True, 'vip_addresses': [], 'backend': 'auto'}, [])
    result = fakes.result_of(M.run, module)
    assert result.get('failed') is True and result['msg'].startswith('the host lock %s %s' % (path, KINDS[kind]))
    assert module.calls == []


@pytest.mark.parametrize('exists, write, created, content', [
    (False, True, True, 'pid %d test\n'),          # a writer creates it and says who holds it
    (True, True, True, 'pid %d test\n'),
    (False, False, False, None),                   # check mode: no file made
    (True, False, True, 'an earlier holder\n'),    # check mode: locked, the file left as it was
])
def test_check_mode_never_creates_or_writes_the_lock(tmp_path, exists, write, created, content):
    path = tmp_path / 'lock'
    if exists:
        path.write_text('an earlier holder\n')
        os.chmod(str(path), 0o600)
    with _lock.host_lock(str(path), 1, 'test', write=write):
        assert path.exists() is created
    assert path.exists() is created
    if content:
        assert path.read_text() == (content % os.getpid() if '%d' in content else content)


def test_check_mode_still_waits_for_a_held_lock(tmp_path):
    path = str(tmp_path / 'lock')
    with _lock.host_lock(path, 1, 'the libvirt hook'):
        with pytest.raises(_lock.LockTimeout) as info:
            with _lock.host_lock(path, 1, 'check', write=False):
                raise AssertionError('taken twice')
    assert '(pid %d the libvirt hook)' % os.getpid() in str(info.value)
