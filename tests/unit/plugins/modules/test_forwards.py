# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.forwards as a whole, without root: parameters in, the commands it runs (with canned
answers) and the result out. Each case says which commands must run, in order."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import stat

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils import _lock
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import grammar as G
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.plugins.modules import forwards as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

EMPTY4 = '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j LIBVIRT_FWX\nCOMMIT\n'
EMPTY6 = '*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'
ADDR = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24}]},'
        '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24}]}]')
ROUTE = '[{"dst":"192.168.122.10","dev":"virbr0"}]'
FORWARDS = [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80}]


DEFAULTS = {'forwards': [], 'check_listeners': False, 'public_ip': None, 'public_ip6': None, 'in_interface': None,
            'state': 'present', 'chain_prefix': 'KVMNAT', 'persist_path': None, 'lock_timeout': 10, 'lock_path': None,
            'return_details': True}
BINARIES = {'iptables-nft-save', 'iptables-nft-restore', 'ip6tables-nft-save', 'ip6tables-nft-restore', 'ip'}


class FakeModule(fakes.FakeModule):
    """Answers in order; every payload that reaches iptables-restore is checked against the grammar."""

    def __init__(self, params, answers, check_mode=False, diff=False):
        super().__init__(dict(DEFAULTS, **params), list(answers), check_mode, diff, BINARIES)

    def run_command(self, cmd, data=None, binary_data=False, environ_update=None):
        answer = super().run_command(cmd, data, binary_data, environ_update)
        if data is not None and answer[0] == 0 and 'restore' in fakes.key(cmd):
            G.check_payload(data, self.params['chain_prefix'])     # only engine-written lines reach restore
        return answer


def run(module):
    result = fakes.result_of(M.run, module)
    assert not module.answers, 'commands not run: %s' % module.answers
    return result


def detect(saved4=EMPTY4, saved6=EMPTY6, test4=None):
    """Each family is read (and its payload tested) before the next one."""
    tested = [('iptables-nft-restore --noflush --wait 10 --test', test4)] if test4 else []
    return [('iptables-nft-save', (0, saved4, ''))] + tested + [('ip6tables-nft-save', (0, saved6, ''))]


HOST = [('ip -j addr show', (0, ADDR, '')), ('ip -j -4 route get 192.168.122.10', (0, ROUTE, ''))]


def desired(params):
    """What the module wants for IPv4 (guest network from the canned route: 192.168.122.0/24)."""
    forwards = F.parse_forwards(params['forwards'], params.get('public_ip'))
    forwards = [dataclasses.replace(f, guest_network=ipaddress.ip_network('192.168.122.0/24')) for f in forwards]
    return R.desired_state(forwards, 4)


def applied(params):
    """The IPv4 ruleset after the forwards were applied to EMPTY4, as iptables-save prints it."""
    text = P.plan(S.parse_save(EMPTY4), desired(params)).payload
    tables = S.parse_save(EMPTY4)
    current = None
    for line in text.splitlines():
        if line.startswith(':'):
            tables[current].chains[line[1:].split()[0]] = '-'
        elif line.startswith('*'):
            current = line[1:]
        elif line.startswith('-A '):
            _a, chain, spec = line.split(' ', 2)
            tables[current].rules.setdefault(chain, []).append(spec)
        elif line.startswith('-I '):
            _i, chain, _one, spec = line.split(' ', 3)
            tables[current].rules.setdefault(chain, []).insert(0, spec)
    out = []
    for name, table in tables.items():
        out.append('*' + name)
        out.extend(':%s %s [0:0]' % (chain, policy if policy != '-' else '-') for chain, policy in table.chains.items())
        for chain, rules in table.rules.items():
            out.extend('-A %s %s' % (chain, spec) for spec in rules)
        out.append('COMMIT')
    return '\n'.join(out) + '\n'


@pytest.fixture
def lock(tmp_path):
    return str(tmp_path / 'kvmnet-nat.lock')


def test_check_mode_tests_the_payload_and_applies_nothing(lock):
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock}
    module = FakeModule(params, HOST + detect(test4=(0, '', '')), check_mode=True, diff=True)
    result = run(module)
    assert result['changed'] is True and 'failed' not in result
    assert not any(call.endswith('--noflush --wait 10') for call in module.commands())     # never the real apply
    assert 'ipv4 nat :KVMNAT_DNAT' in result['diff']['after'] and result['diff']['before'] == ''


def test_apply_then_read_back(lock):
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock}
    module = FakeModule(params, HOST + detect(test4=(0, '', '')) + [
        ('iptables-nft-restore --noflush --wait 10', (0, '', '')),
        ('iptables-nft-save', (0, applied(params), ''))])
    result = run(module)
    assert result['changed'] is True and 'failed' not in result, result
    assert result['flavour'] == {'ipv4': 'nft', 'ipv6': 'nft'}


@pytest.mark.parametrize('details', [True, False])
def test_return_details_false_leaves_out_rules_and_forwards_and_nothing_else(lock, details):
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock, 'return_details': details}
    module = FakeModule(params, HOST + detect(test4=(0, '', '')), check_mode=True, diff=True)
    result = run(module)
    assert result['changed'] is True and result['flavour'] == {'ipv4': 'nft', 'ipv6': 'nft'}
    assert result['reasons'] and 'ipv4 nat :KVMNAT_DNAT' in result['diff']['after']
    if details:
        assert 'nat :KVMNAT_DNAT' in result['rules']['ipv4'] and result['forwards'][0]['guest'] == 'web01'
    else:
        assert result['rules'] == {} and result['forwards'] == []


def test_a_read_back_that_differs_fails(lock):
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock}
    module = FakeModule(params, HOST + detect(test4=(0, '', '')) + [
        ('iptables-nft-restore --noflush --wait 10', (0, '', '')),
        ('iptables-nft-save', (0, EMPTY4, ''))])
    result = run(module)
    assert result['failed'] is True and 'read back differs' in result['msg']


def test_an_unchanged_ruleset_runs_no_restore_at_all(lock):
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock}
    module = FakeModule(params, HOST + detect(saved4=applied(params)))
    result = run(module)
    assert result['changed'] is False and result['reasons'] == []
    assert not [call for call in module.commands() if 'restore' in call]


def test_persistence_writes_exactly_the_plan_with_its_mode_and_header(lock, tmp_path):
    base = str(tmp_path / 'kvmnet-nat')
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock, 'persist_path': base}
    result = run(FakeModule(params, HOST + detect(saved4=applied(params))))
    assert result['changed'] is True and result['reasons'] == ['ipv4 persisted rules in %s.v4 updated' % base]
    text = (tmp_path / 'kvmnet-nat.v4').read_text()
    assert text.splitlines()[1].startswith('# kvmnet-nat-restore format=2 family=4 flavour=nft prefix=KVMNAT sha256=')
    assert text == K.persist_text(desired(params), 'nft')
    assert text.split('\n', 2)[2] == P.plan({}, desired(params)).payload
    assert stat.S_IMODE(os.stat(base + '.v4').st_mode) == 0o640
    assert not (tmp_path / 'kvmnet-nat.v6').exists()
    assert sorted(os.listdir(tmp_path)) == ['kvmnet-nat.lock', 'kvmnet-nat.v4']     # no temporary file left
    again = run(FakeModule(params, HOST + detect(saved4=applied(params))))
    assert again['changed'] is False


def test_a_planted_symlink_next_to_the_file_is_never_followed(lock, tmp_path):
    victim = tmp_path / 'victim'
    victim.write_text('precious\n')
    base = str(tmp_path / 'kvmnet-nat')
    for name in ('.kvmnet-nat.v4.kvmnet-tmp', '.kvmnet-nat.v4.tmp'):     # the old, predictable names
        os.symlink(str(victim), str(tmp_path / name))
    params = {'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock, 'persist_path': base}
    run(FakeModule(params, HOST + detect(saved4=applied(params))))
    assert victim.read_text() == 'precious\n'
    assert not os.path.islink(base + '.v4') and os.path.isfile(base + '.v4')


@pytest.mark.parametrize('persist, make, expected', [
    ('relative/kvmnet-nat', None, "must be an absolute file name"),
    ('{tmp}/kvmnet-nat/', None, "must be an absolute file name"),
    ('{tmp}/missing/kvmnet-nat', None, 'directory {tmp}/missing does not exist'),
    ('{tmp}/kvmnet-nat', 'dir', '{tmp}/kvmnet-nat.v4 exists and is not a regular file'),
    ('{tmp}/kvmnet-nat', 'link', '{tmp}/kvmnet-nat.v4 exists and is not a regular file'),
])
def test_a_bad_persist_path_is_refused_before_anything_is_read(lock, tmp_path, persist, make, expected):
    persist = persist.format(tmp=tmp_path)
    if make == 'dir':
        os.mkdir(str(tmp_path / 'kvmnet-nat.v4'))
    elif make == 'link':
        os.symlink('/etc/hostname', str(tmp_path / 'kvmnet-nat.v4'))
    module = FakeModule({'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock,
                         'persist_path': persist}, [])
    result = run(module)
    assert result['failed'] is True and expected.format(tmp=tmp_path) in result['msg'], result['msg']
    assert module.calls == []


@pytest.mark.parametrize('timeout, ok', [(-1, False), (0, False), (1, True), (600, True), (601, False)])
def test_lock_timeout_is_bounded(lock, timeout, ok):
    module = FakeModule({'lock_timeout': timeout, 'lock_path': lock, 'state': 'absent'},
                        [] if not ok else [('iptables-nft-save', (0, EMPTY4, '')), ('ip6tables-nft-save', (0, EMPTY6, ''))])
    result = run(module)
    assert ('failed' not in result) is ok, result
    if not ok:
        assert 'lock_timeout %d must be between 1 and 600 seconds' % timeout in result['msg']


def test_a_held_lock_stops_the_run_before_anything_is_read(lock):
    module = FakeModule({'forwards': FORWARDS, 'public_ip': '203.0.113.10', 'lock_path': lock, 'lock_timeout': 1},
                        HOST)
    with _lock.host_lock(lock, 1, 'a test playing the libvirt hook'):
        result = run(module)
    assert result['failed'] is True
    assert 'another kvmnet.nat run holds the host lock %s (pid %d a test playing the libvirt hook)' % (
        lock, os.getpid()) in result['msg']
    assert not [call for call in module.commands() if 'tables' in call]


def route(ip):
    return [('ip -j -4 route get %s' % ip, (0, '[{"dst":"%s","dev":"virbr0"}]' % ip, ''))]


@pytest.mark.parametrize('guest_ip, commands, expected', [
    ('192.168.122.1', [('ip -j addr show', (0, ADDR, ''))] + route('192.168.122.1'),
     'guest_ip 192.168.122.1 is an address of this host (on virbr0)'),
    ('192.168.122.255', [('ip -j addr show', (0, ADDR, ''))] + route('192.168.122.255'),
     'guest_ip 192.168.122.255 is the broadcast address of 192.168.122.0/24 (on virbr0)'),
    ('203.0.113.10', [], 'guest_ip 203.0.113.10 is the public ip'),
    ('::ffff:192.168.122.10', [], 'is an IPv4-mapped IPv6 address'),
])
def test_a_forward_to_the_host_itself_is_refused_before_any_rule_is_read(lock, guest_ip, commands, expected):
    module = FakeModule({'forwards': [dict(FORWARDS[0], guest_ip=guest_ip)], 'public_ip': '203.0.113.10',
                         'public_ip6': '2001:db8::10', 'lock_path': lock}, commands)
    result = run(module)
    assert result['failed'] is True and expected in result['msg'], result['msg']
    assert not [call for call in module.commands() if 'tables' in call]
