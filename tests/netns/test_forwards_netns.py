# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.forwards against real netfilter and real packets, in throwaway namespaces.

Needs root. Runs the module inside the hypervisor namespace, probes from the client.
"""

from __future__ import annotations

import pytest
from ansible.release import __version__ as ansible_version

from conftest import chain_rules, others, semantic
from netlab import BRIDGE_IP, CLIENT_IP, CLIENT_IP_2, HOST_OWN_IP, PUBLIC_IP, PUBLIC_IP6

FORWARDS = [
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80},
    # the host's web server listens on every address: the admin accepts that its public :80 goes to web01
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 80, 'guest_port': 80, 'allow_in_use': True},
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 2222, 'guest_port': 22, 'sources': [CLIENT_IP + '/32']},
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': '10000-10009', 'guest_port': '20000-20009'},
    {'guest': 'web01', 'guest_ip': '2001:db8:122::10', 'host_port': 8080, 'guest_port': 80},
    {'guest': 'dns01', 'guest_ip': '192.168.122.11', 'proto': 'udp', 'host_port': 5353, 'guest_port': 53},
    {'guest': 'dns01', 'guest_ip': '192.168.122.11', 'host_port': 8081, 'guest_port': 80, 'masquerade': 'always'},
]
PARAMS = {'public_ip': PUBLIC_IP, 'public_ip6': PUBLIC_IP6, 'forwards': FORWARDS}


@pytest.fixture
def applied(lab):
    result = lab.module(PARAMS)
    assert not result.get('failed'), result.get('msg')
    lab.settle()
    return result


def test_first_run_changes_and_uses_the_flavour_in_use(lab):
    result = lab.module(PARAMS)
    assert result['changed'] is True, result
    assert result['flavour'] == {'ipv4': lab.flavour, 'ipv6': lab.flavour}
    for family in (4, 6):
        assert others(lab.save(family)) == others(lab.baseline[family])  # libvirt's and the admin's untouched


# ansible-core 2.21 and later echo the arguments only when the controller asks (INJECT_INVOCATION, passed to the
# module as _ansible_inject_invocation); earlier lines always do
ASKS_FOR_ECHO = tuple(int(part) for part in ansible_version.split('.')[:2]) >= (2, 21)


@pytest.mark.parametrize('details', [True, False])
def test_the_echo_of_the_arguments_leaves_out_the_forwards_without_details(lab, details):
    """Ansible's own exit_json echoes the arguments (``invocation``); with return_details: false (as the role
    calls the module) the echo has every argument but the forwards, which the controller already has."""
    params = dict(PARAMS, return_details=details)
    if ASKS_FOR_ECHO:
        quiet = lab.module(params)
        assert not quiet.get('failed') and 'invocation' not in quiet, quiet.get('invocation')
        params['_ansible_inject_invocation'] = True
    result = lab.module(params)
    assert not result.get('failed'), result.get('msg')
    echoed = result['invocation']['module_args']
    assert echoed['public_ip'] == PUBLIC_IP and echoed['return_details'] is details
    if details:
        assert [f['guest_ip'] for f in echoed['forwards']] == [f['guest_ip'] for f in FORWARDS]
    else:
        assert 'forwards' not in echoed and result['forwards'] == [] and result['rules'] == {}


def test_jumps_are_first_in_every_builtin_chain(lab, applied):
    save = lab.save(4)
    for table, chain, target in (('nat', 'PREROUTING', 'KVMNAT_DNAT'), ('nat', 'OUTPUT', 'KVMNAT_DNAT'),
                                 ('nat', 'POSTROUTING', 'KVMNAT_SNAT'), ('filter', 'FORWARD', 'KVMNAT_FWD')):
        rules = chain_rules(save, table, chain)
        assert rules[0].endswith('-j ' + target), rules
        assert sum(1 for r in rules if r.endswith('-j ' + target)) == 1
    assert not [line for line in semantic(save) if ' -A INPUT ' in line and 'KVMNAT' in line]


def test_declared_tcp_port_reaches_the_guest_which_sees_the_client(lab, applied):
    assert lab.probe('tcp', PUBLIC_IP, 8080) == 'web01 %s 80' % CLIENT_IP


def test_udp_forward(lab, applied):
    assert lab.probe('udp', PUBLIC_IP, 5353) == 'dns01 %s 53' % CLIENT_IP


@pytest.mark.parametrize('host_port, guest_port', [(10000, 20000), (10003, 20003), (10009, 20009)])
def test_port_range_maps_one_to_one(lab, applied, host_port, guest_port):
    assert lab.probe('tcp', PUBLIC_IP, host_port) == 'web01 %s %d' % (CLIENT_IP, guest_port)


def test_ipv6_forward(lab, applied):
    assert lab.probe('tcp', PUBLIC_IP6, 8080) == 'web01 2001:db8::50 80'


@pytest.mark.parametrize('address, port', [
    (PUBLIC_IP, 81),              # a guest port nobody declared
    ('192.168.122.10', 81),       # the guest network, directly, past the DNAT
    ('192.168.122.10', 80),       # a declared guest port, but not through the DNAT
    (PUBLIC_IP, 10010),           # one past the range
])
def test_nothing_else_is_reachable(lab, applied, address, port):
    assert not lab.probe('tcp', address, port).startswith('web01')


def test_host_service_on_its_own_address_is_not_stolen(lab, applied):
    assert lab.probe('tcp', HOST_OWN_IP, 80) == 'host %s 80' % CLIENT_IP
    assert lab.probe('tcp', PUBLIC_IP, 80) == 'web01 %s 80' % CLIENT_IP


def test_source_allow_list(lab, applied):
    assert lab.probe('tcp', PUBLIC_IP, 2222, source=CLIENT_IP) == 'web01 %s 22' % CLIENT_IP
    assert not lab.probe('tcp', PUBLIC_IP, 2222, source=CLIENT_IP_2).startswith('web01')


def test_masquerade_always_shows_the_bridge_address(lab, applied):
    assert lab.probe('tcp', PUBLIC_IP, 8081) == 'dns01 %s 80' % BRIDGE_IP


def test_hairpin_from_a_second_guest(lab, applied):
    # dns01 reaches web01 through the public address; auto masquerades exactly this case
    assert lab.probe('tcp', PUBLIC_IP, 8080, role='dns01') == 'web01 %s 80' % BRIDGE_IP


def test_masquerade_never_leaves_hairpin_sources_alone(lab, applied):
    never = [dict(f, masquerade='never') if f['host_port'] == 8080 else f for f in FORWARDS]
    result = lab.module(dict(PARAMS, forwards=never))
    assert result['changed'] is True
    assert not [r for r in result['rules']['ipv4'] if 'web01 tcp/8080->80 hairpin' in r]
    lab.settle()
    assert lab.probe('tcp', PUBLIC_IP, 8080) == 'web01 %s 80' % CLIENT_IP  # outside clients unaffected
    # No MASQUERADE, so web01 never sees the bridge address. Without br_netfilter its answer goes
    # straight to dns01 from 192.168.122.10 and is dropped; with bridge-nf-call-iptables=1 (as on
    # hosts running Docker) conntrack un-DNATs it on the bridge and web01 sees dns01's own address.
    assert lab.probe('tcp', PUBLIC_IP, 8080, role='dns01') in ('TIMEOUT', 'REFUSED', 'web01 192.168.122.11 80')


def test_the_hypervisor_itself_can_use_the_public_address(lab, applied):
    assert lab.probe('tcp', PUBLIC_IP, 8080, role='hv').startswith('web01 ')


def test_rerun_changes_nothing(lab, applied):
    before = {4: lab.save(4), 6: lab.save(6)}
    again = lab.module(PARAMS)
    assert again['changed'] is False, again['reasons']
    assert {4: lab.save(4), 6: lab.save(6)} == before


def test_check_mode_reports_and_writes_nothing(lab, applied):
    before = lab.save(4)
    changed = dict(PARAMS, forwards=FORWARDS[:-1])
    result = lab.module(changed, check=True, diff=True)
    assert result['changed'] is True
    assert lab.save(4) == before
    removed = [line for line in result['diff']['before'].splitlines()
               if line not in result['diff']['after'].splitlines()]
    assert removed and all('dns01 tcp/8081->80' in line for line in removed), removed


def test_foreign_rule_above_our_jump_is_overtaken(lab, applied):
    lab.x('hv', lab.ipt(4), '-I', 'FORWARD', '1', '-s', '192.0.2.66', '-j', 'DROP')
    result = lab.module(PARAMS)
    assert result['changed'] is True
    assert 'ipv4 filter FORWARD: jump was at position 2, moved back to 1' in result['reasons']
    forward = chain_rules(lab.save(4), 'filter', 'FORWARD')
    assert forward[0].endswith('-j KVMNAT_FWD')
    assert forward[1] == '-A FORWARD -s 192.0.2.66/32 -j DROP'  # theirs kept, just below ours
    lab.x('hv', lab.ipt(4), '-D', 'FORWARD', '-s', '192.0.2.66', '-j', 'DROP')
    assert lab.probe('tcp', PUBLIC_IP, 8080) == 'web01 %s 80' % CLIENT_IP


def test_removing_a_forward_removes_exactly_its_rules(lab, applied):
    before = lab.save(4).splitlines()
    result = lab.module(dict(PARAMS, forwards=[f for f in FORWARDS if f['host_port'] != 8081]))
    assert result['changed'] is True
    after = lab.save(4).splitlines()
    gone = [line for line in before if line not in after]
    assert gone and all('dns01 tcp/8081->80' in line for line in gone), gone
    assert [line for line in after if line not in before] == []
    assert not lab.probe('tcp', PUBLIC_IP, 8081).startswith('dns01')
    assert lab.probe('udp', PUBLIC_IP, 5353) == 'dns01 %s 53' % CLIENT_IP


BAD = [
    ({'guest': 'web01', 'guest_ip': '192.168.122.300', 'host_port': 8080}, 'web01 tcp/8080'),
    ({'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 0}, 'web01 tcp/0'),
    ({'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 70000}, 'web01 tcp/70000'),
    ({'guest': 'app01', 'guest_ip': '192.168.122.12', 'host_port': '10000-10009', 'guest_port': '20000-20001'},
     'app01 tcp/10000-10009'),
    ({'guest': 'app01', 'guest_ip': '192.168.122.12', 'host_port': '10009-10000'}, 'app01 tcp/10009-10000'),
    ({'guest': 'web01', 'guest_ip': '192.168.122.10', 'proto': 'gre', 'host_port': 47}, 'web01 gre/47'),
    ({'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'sources': ['198.51.100.0/40']},
     'web01 tcp/8080'),
    ({'guest': 'dup', 'guest_ip': '192.168.122.12', 'host_port': 8080}, 'dup tcp/8080'),
    ({'guest': 'dup', 'guest_ip': '192.168.122.12', 'host_port': 10005}, 'dup tcp/10005'),
    ({'guest': 'self', 'guest_ip': PUBLIC_IP, 'host_port': 9000}, 'self tcp/9000'),
]


@pytest.mark.parametrize('bad, names', BAD, ids=[b[1] for b in BAD])
def test_bad_input_is_refused_and_nothing_changes(lab, applied, bad, names):
    before = {4: lab.save(4), 6: lab.save(6)}
    result = lab.module(dict(PARAMS, forwards=FORWARDS + [bad]))
    assert result.get('failed') is True
    assert names in result['msg'], result['msg']
    assert 'nothing was changed' in result['msg']
    assert {4: lab.save(4), 6: lab.save(6)} == before


def test_host_port_in_use_is_refused_and_nothing_changes(lab, applied):
    # the same forwards, but port 80 without the admin's opt-in: the host's own :80 would go dark
    forwards = [dict(f, allow_in_use=False) if f['host_port'] == 80 else f for f in FORWARDS]
    before = {4: lab.save(4), 6: lab.save(6)}
    result = lab.module(dict(PARAMS, forwards=forwards))
    assert result.get('failed') is True
    assert 'forward web01 tcp/80->80: host port 80 is already served on this host by tcp 0.0.0.0:80 (' in result['msg']
    assert 'nothing was changed' in result['msg']
    assert {4: lab.save(4), 6: lab.save(6)} == before


def test_mixed_flavours_are_refused_and_nothing_changes(lab, applied):
    other = 'iptables-legacy' if lab.flavour == 'nft' else 'iptables-nft'
    lab.x('hv', other, '-t', 'mangle', '-A', 'PREROUTING', '-s', '192.0.2.1', '-j', 'RETURN')
    try:
        before = lab.save(4)
        result = lab.module(dict(PARAMS, forwards=FORWARDS[:2]))
        assert result.get('failed') is True
        assert 'both iptables-legacy and iptables-nft' in result['msg']
        assert lab.save(4) == before
    finally:
        lab.x('hv', other, '-t', 'mangle', '-D', 'PREROUTING', '-s', '192.0.2.1', '-j', 'RETURN')


def test_chain_name_clash_is_refused_and_nothing_changes(lab, applied):
    lab.x('hv', lab.ipt(4), '-N', 'CLASH_FWD')
    lab.x('hv', lab.ipt(4), '-A', 'CLASH_FWD', '-j', 'RETURN')
    try:
        before = lab.save(4)
        result = lab.module(dict(PARAMS, chain_prefix='CLASH'))
        assert result.get('failed') is True
        assert 'chain CLASH_FWD in table filter exists and holds rules kvmnet.nat did not write' in result['msg']
        assert lab.save(4) == before
    finally:
        lab.x('hv', lab.ipt(4), '-F', 'CLASH_FWD')
        lab.x('hv', lab.ipt(4), '-X', 'CLASH_FWD')


def test_persisted_files_hold_only_our_rules_and_restore_them(lab, applied, tmp_path):
    base = str(tmp_path / 'kvmnet-nat')
    result = lab.module(dict(PARAMS, persist_path=base))
    assert result['changed'] is True  # files written, ruleset already in place
    assert 'ipv4 persisted rules in %s.v4 updated' % base in result['reasons']
    text = (tmp_path / 'kvmnet-nat.v4').read_text()
    rules = [line for line in text.splitlines() if line.startswith('-')]
    assert rules and all(line.startswith(('-A KVMNAT_', '-I PREROUTING 1 ', '-I OUTPUT 1 ', '-I POSTROUTING 1 ',
                                          '-I FORWARD 1 ')) for line in rules), rules
    assert not any('LIBVIRT' in line or 'admin' in line for line in text.splitlines())
    # what a boot would do: remove our state, restore the file, and the module finds nothing to change
    lab.module({'state': 'absent'})
    lab.x('hv', lab.ipt(4) + '-restore', '--noflush', data=text)
    lab.x('hv', lab.ipt(6) + '-restore', '--noflush', data=(tmp_path / 'kvmnet-nat.v6').read_text())
    again = lab.module(dict(PARAMS, persist_path=base))
    assert again['changed'] is False, again['reasons']
    gone = lab.module({'state': 'absent', 'persist_path': base})
    assert gone['changed'] is True
    assert not (tmp_path / 'kvmnet-nat.v4').exists() and not (tmp_path / 'kvmnet-nat.v6').exists()


# Enough forwards for the port dispatch (sub-chains): 400 tcp and 100 udp to guests that do not
# exist, then real ones sorted last in each protocol.
MANY = FORWARDS + [
    {'guest': 'filler%d' % (i % 5), 'guest_ip': '192.168.122.%d' % (50 + i % 5), 'host_port': 30000 + i,
     'guest_port': 80, 'proto': 'udp' if i >= 400 else 'tcp'} for i in range(500)
] + [
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 40000, 'guest_port': 80},
    {'guest': 'dns01', 'guest_ip': '192.168.122.11', 'proto': 'udp', 'host_port': 40001, 'guest_port': 53},
]


def test_many_forwards_dispatch_by_port_and_still_reach_exactly_their_guests(lab, applied):
    few = lab.save(4)
    result = lab.module(dict(PARAMS, forwards=MANY))
    assert result['changed'] is True, result
    save = lab.save(4)
    assert ':KVMNAT_DNAT_1 ' in save and ':KVMNAT_FWD_1 ' in save
    assert len(chain_rules(save, 'nat', 'KVMNAT_DNAT')) == 4  # two halves per protocol
    lab.settle()
    assert lab.probe('tcp', PUBLIC_IP, 40000) == 'web01 %s 80' % CLIENT_IP
    assert lab.probe('udp', PUBLIC_IP, 40001) == 'dns01 %s 53' % CLIENT_IP
    assert lab.probe('tcp', PUBLIC_IP, 8080) == 'web01 %s 80' % CLIENT_IP
    assert lab.probe('tcp', PUBLIC_IP, 10009) == 'web01 %s 20009' % CLIENT_IP
    assert lab.probe('udp', PUBLIC_IP, 5353) == 'dns01 %s 53' % CLIENT_IP
    assert lab.probe('tcp', PUBLIC_IP, 2222, source=CLIENT_IP_2) in ('TIMEOUT', 'REFUSED')
    assert lab.probe('tcp', PUBLIC_IP, 39999) in ('TIMEOUT', 'REFUSED')
    assert lab.probe('tcp', PUBLIC_IP, 30399) in ('TIMEOUT', 'REFUSED')  # a forward to a guest that is not there
    again = lab.module(dict(PARAMS, forwards=MANY))
    assert again['changed'] is False, again['reasons']
    assert others(lab.save(4)) == others(lab.baseline[4])
    back = lab.module(PARAMS)
    assert back['changed'] is True
    assert semantic(lab.save(4)) == semantic(few)  # every sub-chain gone, the flat chains as they were


def test_role_restore_script_flushes_and_restores_every_sub_chain(lab, applied, tmp_path):
    """What netfilter-persistent (flush, then start at boot) does with the role's script."""
    base = str(tmp_path / 'kvmnet-nat')
    lab.module(dict(PARAMS, forwards=MANY, persist_path=base))
    full = {4: lab.save(4), 6: lab.save(6)}
    script = lab.restore_script(__expose_rules_base=base)
    lab.x('hv', script, 'flush')
    for family in (4, 6):
        assert semantic(lab.save(family)) == semantic(lab.baseline[family])
    lab.x('hv', script, 'start')
    for family in (4, 6):
        assert semantic(lab.save(family)) == semantic(full[family])
    again = lab.module(dict(PARAMS, forwards=MANY, persist_path=base))
    assert again['changed'] is False, again['reasons']
    lab.module({'state': 'absent', 'persist_path': base})


def test_absent_leaves_exactly_what_was_there_before(lab, applied):
    result = lab.module({'state': 'absent'})
    assert result['changed'] is True
    assert semantic(lab.save(4)) == semantic(lab.baseline[4])
    assert semantic(lab.save(6)) == semantic(lab.baseline[6])
    again = lab.module({'state': 'absent'})
    assert again['changed'] is False
    assert not lab.probe('tcp', PUBLIC_IP, 8080).startswith('web01')
