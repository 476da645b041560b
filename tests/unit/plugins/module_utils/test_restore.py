# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet-nat-restore (plugins/module_utils/_restore.py): the boot and hook entry point, run against the
fake in-memory backend and the iptables backend (recorded iptables-save text, emulated restore), with the
saved files the converge driver writes. The real program on real iptables: tests/netns/test_hook_netns.py
and test_hardening_netns.py."""

from __future__ import annotations

import hashlib
import io
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _restore as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import backend as iptables
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as nftables
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes
from ansible_collections.kvmnet.nat.tests.unit.plugins.module_utils.test_converge import (
    DECLARED, Fake, Iptables, Together, converge)


@pytest.fixture(params=[Fake, Iptables], ids=['fake', 'iptables'])
def backend(request):
    return request.param()


class Log:
    def __init__(self):
        self.lines = []

    def __call__(self, level, text):
        self.lines.append((level, text))

    def errors(self):
        return [text for level, text in self.lines if level == 'err']


def restore(backend, tmp_path, action='start'):
    """Run the restore of every family as the program does (its engine over the test's host); the
    families' results, the log, and the commands run."""
    module = backend.module({})
    engine = backend.engine(module)
    log = Log()
    done = [R.restore_family(engine, family, str(tmp_path / ('rules.v%d' % family)), action, log) for family in (4, 6)]
    return done, log, [command for command, _data in module.calls]


def changes(commands):
    return [c for c in commands if '-restore' in c]


def ours(backend):
    """Our rules, each family's lines sorted (the emulated host keeps chains in the order they came)."""
    return {family: sorted(text.splitlines()) if isinstance(text, str) else text
            for family, text in backend.ours().items()}


def saved(backend, tmp_path, declared=None):
    _m, result = converge(backend, tmp_path, DECLARED if declared is None else declared)
    assert 'failed' not in result, result.get('msg')
    return ours(backend)


def reboot(backend):
    """The host as after a boot: nothing of ours in the live tables (the saved files stay)."""
    if isinstance(backend, Fake):
        backend.host.live = {family: set() for family in backend.host.live}
    else:
        backend.host.tables = Iptables().host.tables


def test_start_brings_back_what_was_saved_and_then_does_nothing(backend, tmp_path):
    live = saved(backend, tmp_path)
    reboot(backend)
    assert backend.ours() == {}
    done, log, commands = restore(backend, tmp_path)
    assert done == [True, True] and log.errors() == [], log.lines
    assert ours(backend) == live
    assert [level for level, _t in log.lines] == ['notice', 'notice']
    done, log, commands = restore(backend, tmp_path)
    assert done == [True, True] and changes(commands) == [], commands       # all as saved: nothing runs
    assert [level for level, _t in log.lines] == ['debug', 'debug']


def test_a_scope_holding_both_families_is_restored_from_its_one_file(tmp_path):
    together = Together()
    live = saved(together, tmp_path)
    together.host.live = {'inet': set()}
    module = together.module({})
    engine = together.engine(module)
    log = Log()
    assert R.restore_family(engine, 'inet', str(tmp_path / 'rules.nft'), 'start', log) is True, log.lines
    assert ours(together) == live and log.lines[0][1].startswith('inet: start: applied')


def test_flush_removes_ours_and_start_puts_it_back(backend, tmp_path):
    live = saved(backend, tmp_path)
    done, log, _c = restore(backend, tmp_path, 'flush')
    assert done == [True, True] and backend.ours() == {}, log.lines
    done, log, _c = restore(backend, tmp_path, 'start')
    assert done == [True, True] and ours(backend) == live, log.lines


def test_no_saved_file_is_no_forwards_of_that_family(backend, tmp_path):
    saved(backend, tmp_path, DECLARED[:2])          # IPv4 only: no rules.v6
    assert not (tmp_path / 'rules.v6').exists()
    done, log, commands = restore(backend, tmp_path)
    assert done == [True, True] and log.errors() == [] and changes(commands) == []


def _spoil(path, how):
    text = path.read_text()
    if how == 'appended comment':
        path.write_text(text + '# a note\n')
    elif how == 'cut short':
        path.write_text(text[:len(text) // 2])
    elif how == 'empty':
        path.write_text('')
    elif how == 'no header':
        path.write_text(text.split('\n', 2)[2])
    elif how == 'not UTF-8':
        path.write_bytes(text.encode() + b'\xff\n')
    elif how == 'symlink':
        other = path.with_name('other')
        other.write_text(text)
        path.unlink()
        path.symlink_to(other)


SPOILT = {
    'appended comment': 'checksum',
    'cut short': 'checksum',
    'empty': 'empty (cut short?); not restored',
    'no header': 'header',
    'not UTF-8': 'not UTF-8',
    'symlink': 'not a regular file',
}


@pytest.mark.parametrize('how', list(SPOILT))
def test_a_spoilt_file_changes_nothing_of_its_family_and_says_why(backend, tmp_path, how):
    live = saved(backend, tmp_path)
    reboot(backend)
    _spoil(tmp_path / 'rules.v4', how)
    done, log, commands = restore(backend, tmp_path)
    assert done == [False, True], log.lines
    assert len(log.errors()) == 1, log.lines
    if isinstance(backend, Iptables) or how in ('empty', 'not UTF-8', 'symlink'):    # the fake has its own texts
        assert SPOILT[how] in log.errors()[0], log.lines
    assert str(tmp_path / 'rules.v4') in log.errors()[0]
    assert ours(backend) == {6: live[6]}
    assert not [c for c in changes(commands) if c.startswith('iptables')]


def test_a_refused_test_run_changes_nothing_and_names_it(backend, tmp_path):
    saved(backend, tmp_path)
    restore(backend, tmp_path, 'flush')
    backend.host.faults.test.add(4)
    done, log, _c = restore(backend, tmp_path)
    assert done == [False, True]
    assert '--test refused the payload, nothing was changed' in log.errors()[0], log.lines
    assert sorted(backend.ours()) == [6]


def test_a_failing_apply_is_logged(backend, tmp_path):
    saved(backend, tmp_path)
    restore(backend, tmp_path, 'flush')
    backend.host.faults.apply.add(6)
    done, log, _c = restore(backend, tmp_path)
    assert done == [True, False] and log.errors()[0].startswith('IPv6: '), log.lines


def test_a_read_back_that_differs_is_logged(backend, tmp_path):
    saved(backend, tmp_path)
    restore(backend, tmp_path, 'flush')
    backend.host.faults.ignore.add(4)
    done, log, _c = restore(backend, tmp_path)
    assert done == [False, True] and 'read back differs' in log.errors()[0], log.lines


def _rewrite(path, change):
    """The file with its body changed and its checksum made to match (a hostile edit)."""
    first, meta, body = path.read_text().split('\n', 2)
    body = change(body)
    meta = meta.rsplit('sha256=', 1)[0] + 'sha256=' + hashlib.sha256(body.encode()).hexdigest()
    path.write_text('%s\n%s\n%s' % (first, meta, body))


HOSTILE = {
    'foreign line': (lambda b: b.replace('COMMIT', '-A LIBVIRT_FWI -j ACCEPT\nCOMMIT', 1), 'line'),
    'flush line': (lambda b: b.replace('COMMIT', '-F FORWARD\nCOMMIT', 1), 'line'),
    'command substitution': (lambda b: b.replace('-A KVMNAT_DNAT ', '-A KVMNAT_DNAT $(touch /tmp/x) ', 1), 'line'),
    'unknown option': (lambda b: b.replace('--dport 8080', '--dport 8080 --bogus 1', 1), 'line'),
}


@pytest.mark.parametrize('how', list(HOSTILE))
def test_a_file_with_a_matching_checksum_but_foreign_lines_is_refused(tmp_path, how):
    backend = Iptables()
    saved(backend, tmp_path)
    restore(backend, tmp_path, 'flush')
    change, says = HOSTILE[how]
    _rewrite(tmp_path / 'rules.v4', change)
    done, log, commands = restore(backend, tmp_path)
    assert done == [False, True] and says in log.errors()[0], log.lines
    assert 'nothing was changed' in log.errors()[0]
    assert not any(c.startswith('iptables-nft-restore') for c in changes(commands))


@pytest.mark.parametrize('field, value, says', [
    ('family=4', 'family=6', 'header not understood'),
    ('format=2', 'format=1', 'header not understood'),
    ('prefix=KVMNAT', 'prefix=kvm;nat', 'header not understood'),
    ('flavour=nft', 'flavour=sh', 'unknown iptables flavour sh'),
    ('flavour=nft', 'flavour=legacy', 'iptables-legacy-save/-restore (the flavour the rules were applied with) not found'),
])
def test_the_header_is_checked_before_anything_runs(tmp_path, field, value, says):
    backend = Iptables()
    saved(backend, tmp_path)
    restore(backend, tmp_path, 'flush')
    path = tmp_path / 'rules.v4'
    path.write_text(path.read_text().replace(field, value, 1))
    done, log, commands = restore(backend, tmp_path)
    assert done == [False, True] and says in log.errors()[0], log.lines
    assert not [c for c in commands if c.startswith('iptables')]        # IPv4: not even read


def test_the_flavour_of_the_file_is_used_not_the_generic_tool(tmp_path):
    backend = Iptables()
    saved(backend, tmp_path)
    restore(backend, tmp_path, 'flush')
    _done, _log, commands = restore(backend, tmp_path)
    assert commands and all(c.split()[0] in ('iptables-nft-save', 'iptables-nft-restore', 'ip6tables-nft-save',
                                             'ip6tables-nft-restore') for c in commands), commands


@pytest.mark.parametrize('text, seconds', [('', 30), ('20', 20), ('600', 600), ('601', 30), ('0', 30), ('020', 30),
                                           ('-5', 30), ('1e3', 30), ('٣', 30), (' 20', 30),
                                           ('1' * 5000, 30), ('0' * 5000, 30)])
def test_lock_wait(text, seconds):
    assert R.lock_wait(text) == seconds


def test_read_saved(tmp_path):
    path = tmp_path / 'rules.v4'
    assert R.read_saved(str(path)) == (None, None)
    path.write_text('x\n')
    assert R.read_saved(str(path)) == ('x\n', None)
    os.mkfifo(str(tmp_path / 'fifo'))
    assert R.read_saved(str(tmp_path / 'fifo'))[1].endswith('not a regular file; not restored')
    assert R.read_saved(str(tmp_path))[1].endswith('not a regular file; not restored')
    assert R.read_saved('/dev/zero')[1] == '/dev/zero: not a regular file; not restored'      # never opened
    (tmp_path / 'link').symlink_to(path)
    assert R.read_saved(str(tmp_path / 'link'))[1].endswith('not a regular file; not restored')


def _main(tmp_path, argv, environ=None):
    """R.main with a host that has no tool at all (nothing may run), the log kept; (status, log, stderr)."""
    log, err = Log(), io.StringIO()
    host = fakes.FakeModule(binaries=set())
    status = R.main(argv, str(tmp_path / 'rules'), str(tmp_path / 'lock'), host, log, environ or {}, err)
    return status, log, err.getvalue()


def test_main_usage_and_a_lock_that_is_not_a_regular_file(tmp_path):
    assert _main(tmp_path, ['restart'])[::2] == (2, 'usage: kvmnet-nat-restore [start|flush]\n')
    assert _main(tmp_path, ['start', 'flush'])[0] == 2
    os.mkfifo(str(tmp_path / 'lock'))
    status, log, _err = _main(tmp_path, ['start'])
    assert status == 1
    assert 'the host lock %s is not a regular file (it is a FIFO)' % (tmp_path / 'lock') in log.errors()[0]


def test_main_with_no_saved_file_changes_nothing_and_exits_0(tmp_path):
    status, log, err = _main(tmp_path, [])
    assert (status, log.lines, err) == (0, [], '')


def test_a_scope_that_fails_unexpectedly_is_logged_and_the_next_still_runs(tmp_path, monkeypatch):
    seen = []

    def restore_family(engine, scope, path, action, log):
        seen.append(scope)
        if scope == 4:
            raise MemoryError('no memory')
        return True
    monkeypatch.setattr(R, 'restore_family', restore_family)
    status, log, _err = _main(tmp_path, ['start'])
    # every scope of both backends: the iptables families, then the nftables table
    assert (status, seen, log.errors()) == (1, [4, 6, 'inet'], ['IPv4: failed: MemoryError: no memory'])


def test_the_engine_opens_the_saved_file_with_its_own_prefix(tmp_path):
    """A file saved with another chain_prefix is restored with that prefix, whatever the engine's default."""
    backend = Iptables()
    module = backend.module({'lock_path': str(tmp_path / 'lock'), 'lock_timeout': 10, 'return_details': False,
                             'persist_path': str(tmp_path / 'rules')})
    engine = iptables.Engine(module, 'OTHER', 10, legacy=lambda family: [])
    each = engine.open(4)
    from ansible_collections.kvmnet.nat.tests.unit.plugins.module_utils.test_converge import forwards
    text = each.persisted_text(each.desired(forwards(DECLARED[:1])))
    opened, desired = iptables.Engine(module, 'KVMNAT', 10).open_saved(4, text)
    assert (opened.prefix, desired.prefix, opened.flavour) == ('OTHER', 'OTHER', 'nft')


def test_main_restores_an_nftables_file_and_then_does_nothing(tmp_path):
    """The .nft file of the nftables backend: loaded (checked with nft -c first), read back, then a no-op;
    no iptables tool is looked for (the host has none, and no .v4/.v6 file)."""
    backend = nftables.Engine(fakes.FakeModule(), 'KVMNAT').open('inet')
    (tmp_path / 'rules.nft').write_text(backend.persisted_text(backend.desired(nftsets.all_forwards())))
    state = {'ruleset': nftsets.fixture('libvirt.json')}

    def host_answer(command):
        listed = nftsets.listing(state['ruleset'], command)
        if listed:
            return listed
        if command == 'nft -f -':
            state['ruleset'] = nftsets.fixture('applied.json')
        return 0, '', ''
    host = fakes.FakeModule(answers=host_answer, binaries={'nft'})
    for expected in (['notice'], ['debug']):
        log = Log()
        status = R.main(['start'], str(tmp_path / 'rules'), str(tmp_path / 'lock'), host, log, {}, io.StringIO())
        assert status == 0 and [level for level, _t in log.lines] == expected, log.lines
    assert [c for c, _d in host.calls if not c.startswith('nft -j list')] == ['nft -c -f -', 'nft -f -']
