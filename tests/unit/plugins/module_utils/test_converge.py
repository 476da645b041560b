# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The converge driver's contract (plugins/module_utils/_converge.py): one table of cases, run against
the fake in-memory backend and the iptables backend (recorded iptables-save text, emulated restore)."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _converge as C
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import backend as iptables
from ansible_collections.kvmnet.nat.tests.support import fake_backend as FB
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

EMPTY = {4: '*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n'
            '*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j LIBVIRT_FWX\nCOMMIT\n',
         6: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'}
DECLARED = [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80},
            {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 2222, 'guest_port': 22},
            {'guest': 'web01', 'guest_ip': '2001:db8:122::10', 'host_port': 8080, 'guest_port': 80}]
NETWORK = {4: ipaddress.ip_network('192.168.122.0/24'), 6: ipaddress.ip_network('2001:db8:122::/64')}


def forwards(declared):
    parsed = F.parse_forwards(declared, '203.0.113.10', '2001:db8::10')
    return [dataclasses.replace(f, guest_network=NETWORK[f.family]) for f in parsed]


class Module(fakes.FakeModule):
    """A module whose commands are answered by ``host`` (IptablesHost) and whose saved-file writes
    fail when ``write_fails`` names the file."""

    def __init__(self, params, host=None, check_mode=False, diff=False):
        super().__init__(params, {}, check_mode, diff, FB.BINARIES)
        self.host, self.write_fails = host, set()

    def run_command(self, cmd, data=None, binary_data=False, environ_update=None):
        self.calls.append((fakes.key(cmd), data))
        return self.host.answer(fakes.key(cmd), data)

    def atomic_move(self, src, dest):
        if os.path.basename(dest) in self.write_fails:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), dest)
        super().atomic_move(src, dest)


class Fake:
    """The fake backend: its host is in memory."""

    def __init__(self):
        self.host = FB.FakeHost()

    def engine(self, module):
        return FB.FakeEngine(self.host)

    def module(self, params, **kwargs):
        return Module(params, None, **kwargs)      # runs no command

    def ours(self):
        return {family: sorted(items) for family, items in self.host.live.items() if items}


class Iptables:
    """The iptables backend on an emulated iptables-nft host."""

    def __init__(self):
        self.host = FB.IptablesHost(EMPTY)

    def engine(self, module):
        return iptables.Engine(module, 'KVMNAT', 10, legacy=lambda family: [])

    def module(self, params, **kwargs):
        return Module(params, self.host, **kwargs)

    def ours(self):
        return {family: text for family in (4, 6) for text in [self.host.save(family)] if 'KVMNAT' in text}


@pytest.fixture(params=[Fake, Iptables], ids=['fake', 'iptables'])
def backend(request):
    return request.param()


def converge(backend, tmp_path, declared, write_fails=(), **kwargs):
    params = {'lock_path': str(tmp_path / 'lock'), 'lock_timeout': 10, 'return_details': True,
              'persist_path': str(tmp_path / 'rules')}
    module = backend.module(params, **kwargs)
    module.write_fails = set(write_fails)
    engine = backend.engine(module)

    def steps(module):
        C.converge(module, engine, forwards(declared), C.check_params(module, engine))
    return module, fakes.result_of(lambda m: C.run(m, steps), module)


def files(tmp_path):
    return {name: (tmp_path / name).read_text() for name in sorted(os.listdir(str(tmp_path))) if name != 'lock'}


def test_first_apply_changes_and_again_does_not(backend, tmp_path):
    _m, first = converge(backend, tmp_path, DECLARED)
    assert first['changed'] is True and 'failed' not in first, first.get('msg')
    assert sorted(backend.ours()) == [4, 6] and sorted(files(tmp_path)) == ['rules.v4', 'rules.v6']
    _m, again = converge(backend, tmp_path, DECLARED)
    assert (again['changed'], again['reasons']) == (False, [])


def test_check_mode_writes_nothing_and_creates_no_lock(backend, tmp_path):
    module, result = converge(backend, tmp_path, DECLARED, check_mode=True)
    assert result['changed'] is True and 'failed' not in result, result.get('msg')
    assert backend.ours() == {} and os.listdir(str(tmp_path)) == []
    assert not [c for c, _d in module.calls if c.endswith('--noflush --wait 10')]


def test_diff_before_and_after(backend, tmp_path):
    _m, result = converge(backend, tmp_path, DECLARED[:1], diff=True)
    assert result['diff']['before'] == '' and result['diff']['after'].startswith('ipv4 ')
    assert result['diff']['before_header'] == backend.engine(None).diff_header
    _m, removed = converge(backend, tmp_path, [], diff=True)
    assert removed['diff']['before'] == result['diff']['after'] and removed['diff']['after'] == ''


def test_a_failing_apply_puts_the_saved_files_back(backend, tmp_path):
    converge(backend, tmp_path, DECLARED[:1])
    before, live = files(tmp_path), backend.ours()
    backend.host.faults.apply.add(4)
    _m, result = converge(backend, tmp_path, DECLARED)
    assert result['failed'] is True
    assert 'nothing was changed; %s, %s put back as it was' % (tmp_path / 'rules.v4', tmp_path / 'rules.v6') \
        in result['msg'], result['msg']
    assert files(tmp_path) == {'rules.v4': before['rules.v4']} and backend.ours() == live


def test_a_failing_save_applies_nothing(backend, tmp_path):
    _m, result = converge(backend, tmp_path, DECLARED, write_fails={'rules.v6'})
    assert result['failed'] is True and 'writing %s failed' % (tmp_path / 'rules.v6') in result['msg'], result['msg']
    assert 'no rule was applied' in result['msg'] and backend.ours() == {} and files(tmp_path) == {}
    assert backend.host.applied == []


def test_a_read_back_that_differs_fails_naming_it(backend, tmp_path):
    backend.host.faults.ignore.add(4)
    _m, result = converge(backend, tmp_path, DECLARED)
    assert result['failed'] is True
    assert 'IPv4 rules were applied but the ruleset read back differs from the desired one' in result['msg']


def test_a_failing_test_run_changes_nothing(backend, tmp_path):
    backend.host.faults.test.add(6)
    _m, result = converge(backend, tmp_path, DECLARED)
    assert result['failed'] is True and backend.ours() == {} and files(tmp_path) == {}


def test_state_absent_removes_everything_ours(backend, tmp_path):
    converge(backend, tmp_path, DECLARED)
    _m, result = converge(backend, tmp_path, [])
    assert result['changed'] is True and 'failed' not in result, result.get('msg')
    assert backend.ours() == {} and files(tmp_path) == {}
    _m, again = converge(backend, tmp_path, [])
    assert again['changed'] is False


def test_a_family_without_a_tool_fails_only_when_it_has_forwards(tmp_path):
    fake = Fake()
    fake.host = FB.FakeHost(families=(4,))
    _m, result = converge(fake, tmp_path, DECLARED[:2])
    assert result['changed'] is True and 'failed' not in result
    _m, result = converge(fake, tmp_path, DECLARED)
    assert result['failed'] is True
    assert result['msg'] == 'IPv6 forwards were given but this host has no fake tool, nothing was changed'


class Together(Fake):
    """A backend whose one scope holds both families (one nftables table): one plan, one file."""

    def __init__(self, families=(4, 6)):
        super().__init__()
        self.host = FB.FakeHost(families, together=True)


def test_one_scope_for_both_families_is_planned_applied_and_saved_once(tmp_path):
    together = Together()
    _m, first = converge(together, tmp_path, DECLARED, diff=True)
    assert first['changed'] is True and 'failed' not in first, first.get('msg')
    assert list(first['flavour']) == ['inet'] and len(together.host.applied) == 1
    assert together.ours() == {'inet': ['4 web01 tcp/2222->22', '4 web01 tcp/8080->80', '6 web01 tcp/8080->80']}
    assert sorted(files(tmp_path)) == ['rules.nft'] and first['diff']['after'].startswith('inet ')
    _m, again = converge(together, tmp_path, DECLARED)
    assert (again['changed'], again['reasons']) == (False, [])


def test_one_scope_for_both_families_puts_its_file_back_when_the_apply_fails(tmp_path):
    together = Together()
    converge(together, tmp_path, DECLARED[:1])
    before, live = files(tmp_path), together.ours()
    together.host.faults.apply.add('inet')
    _m, result = converge(together, tmp_path, DECLARED)
    assert result['failed'] is True and 'nothing was changed; %s put back as it was' % (tmp_path / 'rules.nft') \
        in result['msg'], result['msg']
    assert files(tmp_path) == before and together.ours() == live


def test_one_scope_without_a_tool_names_every_family_given(tmp_path):
    together = Together(families=())
    _m, result = converge(together, tmp_path, DECLARED)
    assert result['msg'] == 'IPv4 and IPv6 forwards were given but this host has no fake tool, nothing was changed'
    _m, result = converge(together, tmp_path, [])
    assert result['changed'] is False and 'failed' not in result


def test_the_persisted_file_gives_back_the_desired_state(backend, tmp_path):
    """What a restore at boot plans against: the desired state the saved file describes."""
    module = backend.module({})
    engine = backend.engine(module)
    for family in (4, 6):
        each = engine.open(family)
        desired = each.desired(forwards(DECLARED))
        text = each.persisted_text(desired)
        assert each.desired_from_persisted(text) == desired
        assert each.persisted_text(each.desired_from_persisted(text)) == text
