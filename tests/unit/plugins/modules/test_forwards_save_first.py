# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The saved files never describe other rules than the live ones (issue 19, item 5).

kvmnet-nat-restore applies the saved files at every libvirt network event and at boot, so a saved
file that outlives the rules it describes brings a removed forward back. The module writes the files
first and applies after; a file it cannot write fails the task with no rule applied; a payload that
fails after the files were written puts them back. Each case: the state before (live rules and
files), the run, what fails, and what the files, the commands and the message are afterwards.
"""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _converge as C
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.plugins.modules import forwards as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

EMPTY = {4: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j LIBVIRT_FWX\nCOMMIT\n',
         6: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'}
ADDR = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24},{"local":"2001:db8:122::1","prefixlen":64}]},'
        '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24},{"local":"2001:db8::10","prefixlen":64}]}]')
NETWORK = {4: ipaddress.ip_network('192.168.122.0/24'), 6: ipaddress.ip_network('2001:db8:122::/64')}
GUEST = {4: '192.168.122.10', 6: '2001:db8:122::10'}
TOOL = {4: 'iptables-nft', 6: 'ip6tables-nft'}
BINARIES = {'iptables-nft-save', 'iptables-nft-restore', 'ip6tables-nft-save', 'ip6tables-nft-restore', 'ip'}
DEFAULTS = {'forwards': [], 'check_listeners': False, 'public_ip': '203.0.113.10', 'public_ip6': '2001:db8::10',
            'in_interface': None, 'state': 'present', 'chain_prefix': 'KVMNAT', 'persist_path': None, 'lock_timeout': 10,
            'lock_path': None, 'return_details': True, 'vip_addresses': []}


def fwd(port, guest_port, family=4):
    return {'guest': 'web01', 'guest_ip': GUEST[family], 'host_port': port, 'guest_port': guest_port}


# the states of the table: which forwards are declared
STATES = {
    'both': [fwd(8080, 80), fwd(2222, 22), fwd(8080, 80, 6)],
    '8080': [fwd(8080, 80), fwd(8080, 80, 6)],                  # 2222 closed (the example)
    '8080+2223': [fwd(8080, 80), fwd(2222, 22), fwd(2223, 22), fwd(8080, 80, 6), fwd(2223, 22, 6)],
    'v4 only': [fwd(8080, 80), fwd(2222, 22)],
    'none': [],
}


def desired(state, family):
    forwards = F.parse_forwards(STATES[state], DEFAULTS['public_ip'], DEFAULTS['public_ip6'])
    forwards = [dataclasses.replace(f, guest_network=NETWORK[f.family]) for f in forwards]
    return R.desired_state(forwards, family)


def live(state, family):
    """iptables-save after ``state`` was applied to EMPTY (one payload built from nothing)."""
    want = desired(state, family)
    if want.empty:
        return EMPTY[family]
    tables = S.parse_save(EMPTY[family])
    current = None
    for line in P.plan(tables, want).payload.splitlines():
        if line.startswith('*'):
            current = line[1:]
        elif line.startswith(':'):
            tables[current].chains[line[1:].split()[0]] = '-'
        elif line.startswith('-A '):
            _a, chain, spec = line.split(' ', 2)
            tables[current].rules.setdefault(chain, []).append(spec)
        elif line.startswith('-I '):
            _i, chain, _one, spec = line.split(' ', 3)
            tables[current].rules.setdefault(chain, []).insert(0, spec)
    out = []
    for name, table in tables.items():
        out.append('*' + name)
        out.extend(':%s %s [0:0]' % (chain, policy) for chain, policy in table.chains.items())
        for chain, rules in table.rules.items():
            out.extend('-A %s %s' % (chain, spec) for spec in rules)
        out.append('COMMIT')
    return '\n'.join(out) + '\n'


def saved(state, family):
    """The saved file of ``state`` (None: no file)."""
    want = desired(state, family)
    return None if want.empty else K.persist_text(want, 'nft')


class Module(fakes.FakeModule):
    """Answers by command; ``fail``: {(operation, path): the calls that fail, counted from 1}."""

    def __init__(self, params, answers, fail):
        super().__init__(dict(DEFAULTS, **params), answers, False, False, BINARIES)
        self.fail = fail
        self.seen = {}

    def failing(self, operation, path):
        count = self.seen[operation, path] = self.seen.get((operation, path), 0) + 1
        if count in self.fail.get((operation, os.path.basename(path)), ()):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)

    def atomic_move(self, src, dest):
        self.calls.append(('write ' + os.path.basename(dest), None))
        self.failing('write', dest)
        super().atomic_move(src, dest)


class Os:
    """``os`` for the module, whose ``remove`` fails as ``module.fail`` says."""

    def __init__(self, module):
        self.module = module

    def __getattr__(self, name):
        return getattr(os, name)

    def remove(self, path):
        self.module.calls.append(('remove ' + os.path.basename(path), None))
        self.module.failing('remove', path)
        os.remove(path)


def answers(before, after, apply_rc):
    """iptables answers: read (and test) both families, then apply and read back as ``apply_rc`` says."""
    seq = [('ip -j addr show', (0, ADDR, ''))] if STATES[after] else []
    for family in (4, 6):
        if not desired(after, family).empty:
            seq.append(('ip -j -%d route get %s' % (family, GUEST[family]),
                        (0, '[{"dst":"%s","dev":"virbr0"}]' % GUEST[family], '')))
    applying = []
    for family in (4, 6):
        seq.append(('%s-save' % TOOL[family], (0, live(before, family), '')))
        if live(before, family) != live(after, family):
            seq.append(('%s-restore --noflush --wait 10 --test' % TOOL[family], (0, '', '')))
            applying.append(family)
    for family in applying:
        rc = apply_rc.get(family, 0)
        seq.append(('%s-restore --noflush --wait 10' % TOOL[family], (rc, '', 'iptables-restore: line 3 failed' if rc else '')))
        if rc:
            break
        seq.append(('%s-save' % TOOL[family], (0, live(after, family), '')))
    return seq


# before, after, what fails (operation, file name): call numbers, rc of the applies,
# expected files afterwards ('before'/'after' state per family), applied families, message parts
CASES = {
    'closing 2222, the directory read-only: nothing applied': (
        'both', '8080', {('write', 'kvmnet-nat.v4'): {1}}, {},
        {4: 'both', 6: 'both'}, [],
        ['writing {base}.v4 failed: Read-only file system; no rule was applied', 'nothing was changed']),
    'opening 2223, .v6 not writable: .v4 put back, nothing applied': (
        'both', '8080+2223', {('write', 'kvmnet-nat.v6'): {1}}, {},
        {4: 'both', 6: 'both'}, [],
        ['writing {base}.v6 failed: Read-only file system; no rule was applied', 'nothing was changed']),
    'removing everything, .v4 cannot be removed: nothing applied': (
        'both', 'none', {('remove', 'kvmnet-nat.v4'): {1}}, {},
        {4: 'both', 6: 'both'}, [],
        ['removing {base}.v4 failed: Read-only file system; no rule was applied', 'nothing was changed']),
    'removing everything, .v6 cannot be removed: .v4 written back': (
        'both', 'none', {('remove', 'kvmnet-nat.v6'): {1}}, {},
        {4: 'both', 6: 'both'}, [],
        ['removing {base}.v6 failed: Read-only file system; no rule was applied', 'nothing was changed']),
    'the IPv4 payload fails: both files put back': (
        'both', '8080+2223', {}, {4: 1},
        {4: 'both', 6: 'both'}, [],
        ['line 3 failed', 'nothing was changed; {base}.v4, {base}.v6 put back as it was']),
    'the IPv6 payload fails after IPv4 applied: .v6 put back, .v4 kept': (
        'both', '8080+2223', {}, {6: 1},
        {4: '8080+2223', 6: 'both'}, [4],
        ['IPv4 rules were applied and saved; {base}.v6 put back as it was']),
    'a new file whose payload fails is removed again': (
        'v4 only', 'both', {}, {6: 1},
        {4: 'v4 only', 6: 'v4 only'}, [],
        ['nothing was changed; {base}.v6 put back as it was']),
    'the payload fails and the file cannot be put back: said so': (
        'both', '8080', {('write', 'kvmnet-nat.v4'): {2}}, {4: 1},
        {4: '8080', 6: 'both'}, [],
        ['nothing was changed; putting back {base}.v4 failed (Read-only file system): it now holds rules that '
         'are not applied']),
    'all is well: the files are written, then the rules applied': (
        'both', '8080', {}, {},
        {4: '8080', 6: '8080'}, [4],
        []),
}


@pytest.mark.parametrize('before, after, fail, apply_rc, files, applied, msg', CASES.values(), ids=list(CASES))
def test_the_saved_files_never_describe_other_rules_than_the_live_ones(tmp_path, monkeypatch, before, after, fail,
                                                                       apply_rc, files, applied, msg):
    base = str(tmp_path / 'kvmnet-nat')
    for family in (4, 6):
        text = saved(before, family)
        if text is not None:
            with open('%s.v%d' % (base, family), 'w') as handle:
                handle.write(text)
            os.chmod('%s.v%d' % (base, family), 0o640)
    seq = answers(before, after, apply_rc)
    module = Module({'forwards': STATES[after], 'state': 'present' if STATES[after] else 'absent',
                     'persist_path': base, 'lock_path': str(tmp_path / 'lock')}, list(seq), fail)
    monkeypatch.setattr(C, 'os', Os(module))
    result = fakes.result_of(M.run, module)
    first_apply = next(i for i, (command, _answer) in enumerate(seq) if command.endswith('--wait 10'))
    reached = bool(apply_rc) or not msg                               # a file that cannot be written: no apply
    assert module.answers == ([] if reached else seq[first_apply:])  # every command above ran, no other
    for family in (4, 6):
        path = '%s.v%d' % (base, family)
        text = open(path).read() if os.path.exists(path) else None
        assert (family, text) == (family, saved(files[family], family))
    ran = [c for c, _d in module.calls if c.startswith(('write', 'remove', 'iptables-nft-restore', 'ip6tables'))]
    assert [family for family in (4, 6) if '%s-restore --noflush --wait 10' % TOOL[family] in ran
            and not apply_rc.get(family)] == applied
    if msg:
        assert result.get('failed') is True
        for part in msg:
            assert part.format(base=base) in result['msg'], result['msg']
    else:
        assert 'failed' not in result and result['changed'] is True, result.get('msg')
        # the files are written before the first payload is applied
        writes = [i for i, command in enumerate(ran) if command.startswith(('write', 'remove'))]
        assert writes and max(writes) < ran.index('iptables-nft-restore --noflush --wait 10'), ran


@pytest.mark.parametrize('after', ['8080', '8080+2223', 'none', 'v4 only', 'both'])
def test_check_mode_writes_no_file_and_creates_no_lock(tmp_path, after):
    base = str(tmp_path / 'kvmnet-nat')
    for family in (4, 6):
        with open('%s.v%d' % (base, family), 'w') as handle:
            handle.write(saved('both', family))
        os.chmod('%s.v%d' % (base, family), 0o640)
    before = sorted((name, open(str(tmp_path / name)).read()) for name in os.listdir(str(tmp_path)))
    seq = answers('both', after, {})
    applies = [i for i, (command, _answer) in enumerate(seq) if command.endswith('--wait 10')]
    module = Module({'forwards': STATES[after], 'state': 'present' if STATES[after] else 'absent',
                     'persist_path': base, 'lock_path': str(tmp_path / 'lock')}, seq[:applies[0] if applies else None], {})
    module.check_mode = True
    result = fakes.result_of(M.run, module)
    assert 'failed' not in result and result['changed'] is (after != 'both'), result.get('msg')
    assert module.answers == []
    assert sorted((name, open(str(tmp_path / name)).read()) for name in os.listdir(str(tmp_path))) == before
    assert not [c for c, _d in module.calls if c.startswith(('write', 'remove'))]
