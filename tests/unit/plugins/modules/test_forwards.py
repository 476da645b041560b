# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.forwards as a whole, without root: parameters in, the commands it runs (with canned
answers) and the result out. Each case says which commands must run, in order."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import os
import stat

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _converge as C
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
            'return_details': True, 'backend': 'auto'}
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
        assert 'invocation' not in result           # AnsibleModule echoes every argument, the forwards too
    else:
        assert result['rules'] == {} and result['forwards'] == []
        # the echo of the arguments without the forwards (exit_json echoes what it is given)
        echoed = result['invocation']['module_args']
        assert 'forwards' not in echoed and echoed == {k: v for k, v in module.params.items() if k != 'forwards'}


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


# ---------------------------------------------------------------- a public address not of this host (issue 19)


ANSWERS = {'ip -j addr show': (0, ADDR, ''),
           'ip -j -4 route get 192.168.122.': (0, '[{"dst":"192.168.122.10","dev":"virbr0"}]', '')}


def check_host(public_ip=None, vips=None, forwards=None):
    """``_check_host`` of the module (what it says about the host's addresses), with a canned ``ip``."""
    params = {'public_ip': '203.0.113.10', 'public_ip6': None, 'in_interface': None, 'check_listeners': False,
              'vip_addresses': vips if vips is not None else []}
    raws = forwards or [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8081, 'guest_port': 80,
                         'public_ip': public_ip}]
    module = fakes.FakeModule(params, ANSWERS)
    parsed = F.parse_forwards(raws, params['public_ip'])
    try:
        return [str(fwd.public_ip) for fwd in M._check_host(module, parsed)], module.warnings
    except fakes.Exit as exc:
        return exc.result['errors'], module.warnings


def foreign(address, labels):
    return ('public_ip %s is not an address of this host (forwards %s): they would take traffic routed through this '
            "host to %s, someone else's service; give an address of this host, or list %s in vip_addresses (role: "
            'expose_vip_addresses) if it is a failover address that moves between hosts'
            % (address, labels, address, address))


@pytest.mark.parametrize('public_ip, vips, expected', [
    # the issue: a guest host's public_ip that the hypervisor routes to but does not own was only warned
    ('203.0.113.99', None, [foreign('203.0.113.99', 'web01 tcp/8081->80')]),
    ('198.51.100.7', ['203.0.113.99'], [foreign('198.51.100.7', 'web01 tcp/8081->80')]),
    ('203.0.113.99', ['203.0.113.99'], ['203.0.113.99']),                  # a listed VIP
    ('203.0.113.99', ['198.51.100.7', '203.0.113.99'], ['203.0.113.99']),
    (None, None, ['203.0.113.10']),                                          # the host's own address
    ('203.0.113.10', ['203.0.113.99'], ['203.0.113.10']),
    ('203.0.113.99', ['127.0.0.1', 'x'], ['vip_addresses 127.0.0.1 is a loopback address',
                                          "vip_addresses 'x' is not an IP address",
                                          foreign('203.0.113.99', 'web01 tcp/8081->80')]),
])
def test_a_public_address_not_of_this_host_is_refused_unless_a_listed_vip(public_ip, vips, expected):
    assert check_host(public_ip, vips) == (expected, [])


def test_one_error_per_foreign_address_naming_every_forward():
    forwards = [{'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': port, 'public_ip': '203.0.113.99'}
                for port in (8081, 8082)]
    forwards.append({'guest': 'web02', 'guest_ip': '192.168.122.11', 'host_port': 9000, 'public_ip': '198.51.100.7'})
    errors, _warnings = check_host(forwards=forwards, vips=[])
    assert errors == [foreign('198.51.100.7', 'web02 tcp/9000->9000'),
                      foreign('203.0.113.99', 'web01 tcp/8081->8081, web01 tcp/8082->8082')]


def test_the_option_is_in_the_argument_spec_as_documented():
    assert M.argument_spec()['vip_addresses'] == {'type': 'list', 'elements': 'str', 'default': []}


# ---------------------------------------------------------------- the saved files and the live rules
# The saved files never describe other rules than the live ones (issue 19, item 5).
#
# kvmnet-nat-restore applies the saved files at every libvirt network event and at boot, so a saved
# file that outlives the rules it describes brings a removed forward back. The module writes the files
# first and applies after; a file it cannot write fails the task with no rule applied; a payload that
# fails after the files were written puts them back. Each case: the state before (live rules and
# files), the run, what fails, and what the files, the commands and the message are afterwards.


EMPTY = {4: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\n-A FORWARD -j LIBVIRT_FWX\nCOMMIT\n',
         6: '*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n*filter\n:FORWARD ACCEPT [0:0]\nCOMMIT\n'}
ADDR46 = ('[{"ifname":"virbr0","addr_info":[{"local":"192.168.122.1","prefixlen":24},{"local":"2001:db8:122::1","prefixlen":64}]},'
          '{"ifname":"eth0","addr_info":[{"local":"203.0.113.10","prefixlen":24},{"local":"2001:db8::10","prefixlen":64}]}]')
NETWORK = {4: ipaddress.ip_network('192.168.122.0/24'), 6: ipaddress.ip_network('2001:db8:122::/64')}
GUEST = {4: '192.168.122.10', 6: '2001:db8:122::10'}
TOOL = {4: 'iptables-nft', 6: 'ip6tables-nft'}
SAVED_DEFAULTS = {'forwards': [], 'check_listeners': False, 'public_ip': '203.0.113.10', 'public_ip6': '2001:db8::10',
                  'in_interface': None, 'state': 'present', 'chain_prefix': 'KVMNAT', 'persist_path': None, 'lock_timeout': 10,
                  'lock_path': None, 'return_details': True, 'vip_addresses': [], 'backend': 'auto'}


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


def state_desired(state, family):
    forwards = F.parse_forwards(STATES[state], SAVED_DEFAULTS['public_ip'], SAVED_DEFAULTS['public_ip6'])
    forwards = [dataclasses.replace(f, guest_network=NETWORK[f.family]) for f in forwards]
    return R.desired_state(forwards, family)


def state_live(state, family):
    """iptables-save after ``state`` was applied to EMPTY (one payload built from nothing)."""
    want = state_desired(state, family)
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
    want = state_desired(state, family)
    return None if want.empty else K.persist_text(want, 'nft')


class Module(fakes.FakeModule):
    """Answers by command; ``fail``: {(operation, path): the calls that fail, counted from 1}."""

    def __init__(self, params, answers, fail):
        super().__init__(dict(SAVED_DEFAULTS, **params), answers, False, False, BINARIES)
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
    seq = [('ip -j addr show', (0, ADDR46, ''))] if STATES[after] else []
    for family in (4, 6):
        if not state_desired(after, family).empty:
            seq.append(('ip -j -%d route get %s' % (family, GUEST[family]),
                        (0, '[{"dst":"%s","dev":"virbr0"}]' % GUEST[family], '')))
    applying = []
    for family in (4, 6):
        seq.append(('%s-save' % TOOL[family], (0, state_live(before, family), '')))
        if state_live(before, family) != state_live(after, family):
            seq.append(('%s-restore --noflush --wait 10 --test' % TOOL[family], (0, '', '')))
            applying.append(family)
    for family in applying:
        rc = apply_rc.get(family, 0)
        seq.append(('%s-restore --noflush --wait 10' % TOOL[family], (rc, '', 'iptables-restore: line 3 failed' if rc else '')))
        if rc:
            break
        seq.append(('%s-save' % TOOL[family], (0, state_live(after, family), '')))
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
