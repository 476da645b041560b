# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The doctor's walker and diagnosis on recorded rulesets: each thing broken on purpose is named."""

from __future__ import annotations

import copy
import ipaddress
import os

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _doctor as D
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils import _host as H
from ansible_collections.kvmnet.nat.plugins.module_utils import _libvirt as L
from ansible_collections.kvmnet.nat.plugins.module_utils import _listeners
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import diagnose as I
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables.backend import Engine
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import walk as W

FIXTURES = os.path.join(os.path.dirname(__file__), 'fixtures')
PUB = '203.0.113.10'
WEB_MAC = '52:54:00:4b:01:10'
DECLARED = [
    dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2222, guest_port=22, sources=['198.51.100.0/24']),
    dict(guest='dns01', guest_ip='192.168.122.11', proto='udp', host_port=5353, guest_port=53),
    dict(guest='app02', guest_ip='192.168.122.13', host_port=8443, guest_port=443, masquerade='always'),
]
NETWORK_XML = """<network><name>default</name><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.254'/>
  </dhcp></ip></network>"""
NETWORK_XML_ELSEWHERE = """<network xmlns:dnsmasq='http://libvirt.org/schemas/network/dnsmasq/1.0'>
  <name>default</name><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.2' end='192.168.122.200'/>
  </dhcp></ip>
  <dnsmasq:options><dnsmasq:option value='dhcp-option=option:router,192.168.122.254'/></dnsmasq:options></network>"""


BACKEND = I.Diagnosis(Engine(None, 'KVMNAT', 0))       # what the module hands the doctor (no command is run)


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def forwards():
    parsed = F.parse_forwards(DECLARED, public_ip=PUB)
    net = ipaddress.ip_network('192.168.122.0/24')
    return [F.Forward(**dict(f.__dict__, guest_network=net)) if f.masquerade == 'auto' else f for f in parsed]


def forward(label='web01 tcp/8080->80'):
    return next(f for f in forwards() if f.label == label)


def live_tables(with_ours=True):
    """libvirt's and Docker's rules (recorded), with ours as the engine renders them on top."""
    tables = S.parse_save(fixture('libvirt-docker.save'))
    if with_ours:
        desired = R.desired_state(forwards(), 4)
        for (tname, chain), rules in desired.chains.items():
            tables[tname].chains[chain] = '-'
            tables[tname].rules[chain] = list(rules)
        for tname, chain, spec in desired.jumps:
            tables[tname].rules.setdefault(chain, []).insert(0, spec)
    return tables


def guest(name='web01', state='running', ip='192.168.122.10', mac=WEB_MAC):
    iface = {'mac': mac, 'network': 'default', 'target': 'vnet0',
             'addresses': [{'address': ip, 'mac': mac, 'source': 'lease'}] if ip else []}
    return {'name': name, 'state': state, 'interfaces': [iface], 'ipv4': [ip] if ip else [], 'ipv6': []}


def healthy_view(tables=None, network_xml=NETWORK_XML):
    view = D.View(backend=BACKEND)
    view.families = {4: D.Family(4, 'nft', tables or live_tables()), 6: D.Family(6, 'nft', {})}
    view.sysctl = {'ipv4_forward': '1', 'ipv6_forward': '1', 'rp_filter': {'all': 0, 'eth0': 2}, 'bridge_nf': None}
    view.interfaces = [(ipaddress.ip_interface('203.0.113.10/24'), 'eth0'),
                       (ipaddress.ip_interface('192.168.122.1/24'), 'virbr0'),
                       (ipaddress.ip_interface('127.0.0.1/8'), 'lo')]
    view.routes = {'192.168.122.10': 'virbr0', '192.168.122.11': 'virbr0', '192.168.122.13': 'virbr0',
                   '198.51.100.0': 'eth0'}
    view.default_dev = {4: 'eth0'}
    view.nft = []
    view.libvirt = {'domains': {'web01': guest(), 'dns01': guest('dns01', ip='192.168.122.11', mac='52:54:00:aa:00:02'),
                                'app02': guest('app02', ip='192.168.122.13', mac='52:54:00:aa:00:03')},
                    'networks': {'default': L.parse_network_xml(network_xml)},
                    'leases': {'default': [{'mac': WEB_MAC, 'address': '192.168.122.10', 'hostname': 'web01'}]}}
    view.answers = {('192.168.122.10', 'tcp', 80): (True, 'web01 192.168.122.1'),
                    ('192.168.122.10', 'tcp', 22): (True, ''),
                    ('192.168.122.13', 'tcp', 443): (True, '')}
    view.desired = {4: R.desired_state(forwards(), 4), 6: R.desired_state(forwards(), 6)}
    return view


def verdict(view, label='web01 tcp/8080->80'):
    return D.diagnose(forward(label), view)

# ---------------------------------------------------------------- the walker


CHAINS = {
    'FORWARD': ['-j USER', '-o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT', '-o virbr0 -j REJECT'],
    'USER': ['-p tcp -m tcp --dport 22 -j RETURN', '-m set --match-set blocked src -j DROP', '-j GOTO_ME'],
    'GOTO_ME': ['-s 10.0.0.0/8 -g DEEP', '-d 192.168.122.10/32 -p tcp -m tcp --dport 80 -j LOG', '-j RETURN'],
    'DEEP': ['-j ACCEPT'],
}


@pytest.mark.parametrize('packet, target, rule, uncertain', [
    # RETURN from USER: back in FORWARD, rejected by libvirt's rule
    ({'proto': 'tcp', 'dport': 22, 'oface': 'virbr0', 'src': '203.0.113.50'}, 'REJECT', ('FORWARD', 3), 0),
    # an ipset match cannot be told: passed over, reported; LOG goes on; RETURN; the REJECT
    ({'proto': 'tcp', 'dport': 80, 'dst': '192.168.122.10', 'oface': 'virbr0', 'src': '203.0.113.50'},
     'REJECT', ('FORWARD', 3), 1),
    # -g into DEEP: accepted there
    ({'proto': 'tcp', 'dport': 80, 'oface': 'virbr0', 'src': '10.1.2.3'}, 'ACCEPT', ('DEEP', 1), 1),
    # an established packet never reaches the REJECT
    ({'proto': 'udp', 'dport': 53, 'oface': 'virbr0', 'src': '203.0.113.50', 'states': ('ESTABLISHED',)},
     'ACCEPT', ('FORWARD', 2), 1),
    # another interface: the policy
    ({'proto': 'udp', 'dport': 53, 'oface': 'eth1', 'src': '203.0.113.50'}, 'DROP', None, 1),
])
def test_walk_follows_jumps_returns_gotos_and_policies(packet, target, rule, uncertain):
    out = W.walk(CHAINS, 'FORWARD', packet, {'FORWARD': 'DROP'})
    assert out.target == target
    assert (out.rule[:2] if out.rule else None) == rule
    assert len(out.uncertain) == uncertain
    assert out.policy == (rule is None)


@pytest.mark.parametrize('spec, packet, expected', [
    ('-s 192.168.122.0/24 -j ACCEPT', {'src_outside': (ipaddress.ip_network('192.168.122.0/24'),)}, False),
    ('-s 198.51.100.0/24 -j ACCEPT', {}, None),                 # an unknown client may be there
    ('-s 0.0.0.0/0 -j ACCEPT', {}, True),
    ('! -s 192.168.122.0/24 -d 10.0.0.0/8 -j ACCEPT', {'src': '203.0.113.1', 'dst': '10.1.1.1'}, True),
    ('-p tcp -m multiport --dports 80,443,8000:8010 -j ACCEPT', {'proto': 'tcp', 'dport': 8005}, True),
    ('-p 17 -j ACCEPT', {'proto': 'udp'}, True),
    ('-i virbr+ -j ACCEPT', {'iface': 'virbr0'}, True),
    ('-m addrtype --dst-type LOCAL -j DOCKER', {'local': False}, False),
    ('-p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -j ACCEPT', {'proto': 'tcp', 'states': ('NEW',)}, True),
    ('-m mark --mark 0x1 -j ACCEPT', {}, None),
    ('-p tcp -m tcp --dport 80 -m mark --mark 0x1 -j ACCEPT', {'proto': 'udp'}, False),   # False wins
])
def test_tests_are_true_false_or_unknown(spec, packet, expected):
    assert W.evaluate(W.parse(spec), packet)[0] is expected


@pytest.mark.parametrize('chains, start, words', [
    ({'A': ['-j B'], 'B': ['-j A']}, 'A', 'a loop in the rules: A -> B -> A'),
    ({'A': ['-g B'], 'B': ['-g A']}, 'A', 'a loop in the rules: A -> B -> A'),              # gotos loop too
    ({'FORWARD': ['-j B'], 'B': ['-p tcp -j C'], 'C': ['-j B']}, 'FORWARD', 'FORWARD -> B -> C -> B'),
    (dict({'C%d' % i: ['-j C%d' % (i + 1)] for i in range(80)}, C80=['-j ACCEPT']), 'C0', 'nested more than 64'),
    ({'A': ['-j B'] * 5, 'B': ['-j C'] * 5, 'C': ['-p tcp -j LOG'] * 5}, 'A', 'passed 100 rules'),
])
def test_a_walk_that_cannot_finish_says_why_and_raises_nothing(chains, start, words):
    out = W.walk(chains, start, {'proto': 'tcp'}, {'FORWARD': 'ACCEPT'}, limit=100)
    assert words in out.unfinished
    assert out.target is None


def test_a_chain_called_twice_is_no_loop():
    chains = {'FORWARD': ['-j LOGS', '-j LOGS', '-j ACCEPT'], 'LOGS': ['-j LOG']}
    out = W.walk(chains, 'FORWARD', {}, {'FORWARD': 'DROP'})
    assert (out.target, out.rule[:2], out.unfinished) == ('ACCEPT', ('FORWARD', 3), '')


def test_parse_keeps_target_options():
    rule = W.parse('-p tcp -j DNAT --to-destination 192.168.122.10:80')
    assert (rule.target, rule.target_option('--to-destination')) == ('DNAT', '192.168.122.10:80')
    assert I.destination('-j DNAT --to-destination [2001:db8::10]:8080') == ('2001:db8::10', 8080)
    assert I.destination('-j DNAT --to-destination 192.168.122.12:20000-20009/10000') == ('192.168.122.12', 20000)
    assert I.destination('-j DNAT --to-destination 2001:db8::10') == ('2001:db8::10', None)

# ---------------------------------------------------------------- the diagnosis


def test_a_healthy_host_is_all_green():
    view = healthy_view()
    for fwd in forwards():
        result = D.diagnose(fwd, view)
        assert result['verdict'] == 'ok', (fwd.label, result['causes'])
        failing = [name for name, check in result['checks'].items() if check['ok'] is False]
        assert failing == [], fwd.label
    result = verdict(view)
    assert result['checks']['rules']['detail'].startswith('DNAT: nat PREROUTING rule 1 -> KVMNAT_DNAT rule 2')
    assert 'hairpin: nat POSTROUTING rule 1 -> KVMNAT_SNAT rule 2 (-s 192.168.122.0/24' in result['checks']['rules']['detail']
    assert result['checks']['counters']['ok'] is None       # no probe asked for
    assert result['checks']['saved']['ok'] is None          # no persist_path given


def break_it(how):
    """A healthy view with one thing broken on purpose."""
    view = healthy_view()
    nat, filt = view.families[4].tables['nat'], view.families[4].tables['filter']
    if how == 'ip_forward off':
        view.sysctl['ipv4_forward'] = '0'
    elif how == 'REJECT above our FORWARD jump':
        filt.rules['FORWARD'].insert(0, '-o virbr0 -j REJECT --reject-with icmp-port-unreachable')
    elif how == 'DNAT jump deleted':
        nat.rules['PREROUTING'].pop(0)
    elif how == 'listener on the public port':
        view.listeners = [_listeners.Listener('tcp', ipaddress.ip_address('0.0.0.0'), 8080, '1', 'nginx[812]')]
    elif how == 'guest stopped':
        view.libvirt['domains']['web01']['state'] = 'shut off'
    elif how == 'address changed':
        view.libvirt['domains']['web01'] = guest(ip='192.168.122.77')
    elif how == 'address leased to another guest':
        view.libvirt['leases']['default'] = [{'mac': '52:54:00:ee:ee:ee', 'address': '192.168.122.10', 'hostname': 'evil'}]
    elif how == 'service down':
        view.answers[('192.168.122.10', 'tcp', 80)] = (False, 'refused')
    elif how == 'gateway elsewhere':
        view.libvirt['networks']['default'] = L.parse_network_xml(NETWORK_XML_ELSEWHERE)
    elif how == 'libvirt nftables reject':
        view.nft = H.nft_tables(LIBVIRT_NFT)
    elif how == 'Docker policy DROP, our jump gone':
        filt.rules['FORWARD'].pop(0)
    elif how == 'firewalld':
        view.firewalld = True
    elif how == 'rp_filter strict':
        view.sysctl['rp_filter'] = {'all': 1, 'eth0': 1}
        view.default_dev = {4: 'eth1'}
    return view


@pytest.mark.parametrize('how, check, words', [
    ('ip_forward off', 'forwarding', ['net.ipv4.ip_forward is 0']),
    ('rp_filter strict', 'forwarding', ['rp_filter strict', 'leaves through eth1']),
    ('firewalld', 'layout', ['firewalld is running']),
    ('libvirt nftables reject', 'layout', ['libvirt_network', 'reject', 'iptables backend']),
    ('REJECT above our FORWARD jump', 'jumps', ['Above our jump in filter FORWARD', '-o virbr0 -j REJECT']),
    ('DNAT jump deleted', 'jumps', ['Our jump in nat PREROUTING is missing']),
    ('Docker policy DROP, our jump gone', 'jumps', ['filter FORWARD is missing', 'policy is DROP (Docker']),
    ('listener on the public port', 'listener', ['nginx[812]', 'listens on the public port']),
    ('guest stopped', 'guest', ['web01 is shut off', 'virsh start web01']),
    ('address changed', 'guest', ['address is now 192.168.122.77', 'to 192.168.122.10']),
    ('address leased to another guest', 'guest', ['leased to another machine', '52:54:00:ee:ee:ee']),
    ('service down', 'guest', ['refuses tcp/80']),
    ('gateway elsewhere', 'route', ['gateway is 192.168.122.254', 'masquerade: always']),
])
def test_each_break_is_named_as_the_first_failing_step(how, check, words):
    result = verdict(break_it(how))
    assert result['verdict'] == 'broken'
    assert result['failed'] == check, result['causes']
    text = result['cause'] + ' ' + result['fix']
    for word in words:
        assert word in text, text
    assert result['checks'][check]['ok'] is False
    # mended, it is green again
    assert verdict(healthy_view())['verdict'] == 'ok'


def test_a_masquerade_always_forward_does_not_care_about_the_gateway():
    result = verdict(break_it('gateway elsewhere'), 'app02 tcp/8443->443')
    assert result['verdict'] == 'ok'
    assert 'whatever the guest' in result['checks']['route']['detail']


def test_the_dnat_jump_deleted_also_shows_in_the_walk():
    result = verdict(break_it('DNAT jump deleted'))
    rules = [c for c in result['causes'] if c['check'] == 'rules']
    assert rules and 'No DNAT takes tcp/8080' in rules[0]['cause']


def test_a_dnat_to_another_guest_is_misdirection():
    view = healthy_view()
    view.families[4].tables['nat'].rules['PREROUTING'].insert(
        0, '-p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.122.99:80')
    result = verdict(view)
    assert result['failed'] == 'jumps'
    assert any('is sent to 192.168.122.99:80' in c['cause'] for c in result['causes'])


LIBVIRT_NFT = {'nftables': [
    {'metainfo': {'version': '1.0.9'}},
    {'table': {'family': 'ip', 'name': 'libvirt_network', 'handle': 1}},
    {'chain': {'family': 'ip', 'table': 'libvirt_network', 'name': 'forward', 'handle': 1, 'type': 'filter',
               'hook': 'forward', 'prio': 0, 'policy': 'accept'}},
    {'chain': {'family': 'ip', 'table': 'libvirt_network', 'name': 'guest_input', 'handle': 2}},
    {'rule': {'family': 'ip', 'table': 'libvirt_network', 'chain': 'forward', 'handle': 5,
              'expr': [{'counter': {'packets': 0, 'bytes': 0}}, {'jump': {'target': 'guest_input'}}]}},
    {'rule': {'family': 'ip', 'table': 'libvirt_network', 'chain': 'guest_input', 'handle': 7,
              'expr': [{'match': {'op': '==', 'left': {'meta': {'key': 'oifname'}}, 'right': 'virbr0'}},
                       {'match': {'op': 'in', 'left': {'ct': {'key': 'state'}}, 'right': ['established', 'related']}},
                       {'accept': None}]}},
    {'rule': {'family': 'ip', 'table': 'libvirt_network', 'chain': 'guest_input', 'handle': 8,
              'expr': [{'match': {'op': '==', 'left': {'meta': {'key': 'oifname'}}, 'right': 'virbr0'}},
                       {'reject': {'type': 'icmp', 'expr': 'port-unreachable'}}]}},
    # iptables-nft's own table: read through iptables-save, never reported from here
    {'table': {'family': 'ip', 'name': 'filter', 'handle': 2}},
    {'chain': {'family': 'ip', 'table': 'filter', 'name': 'FORWARD', 'handle': 1, 'type': 'filter', 'hook': 'forward',
               'prio': 0, 'policy': 'drop'}},
    {'rule': {'family': 'ip', 'table': 'filter', 'chain': 'FORWARD', 'handle': 4,
              'expr': [{'xt': {'type': 'target', 'name': 'REJECT'}}]}},
]}


def test_nft_tables_follow_jumps_and_skip_iptables_own_tables():
    tables = {(t['family'], t['name']): t for t in H.nft_tables(LIBVIRT_NFT)}
    assert tables[('ip', 'filter')]['iptables'] is True
    libvirt = tables[('ip', 'libvirt_network')]
    assert libvirt['iptables'] is False
    [chain] = libvirt['base']
    assert (chain['name'], chain['hook']) == ('forward', 'forward')
    assert [(v, r['ifaces']) for v, r in chain['stops']] == [('reject', (('oifname', 'virbr0', False),))]


def test_a_reject_for_another_bridge_spares_this_forward():
    other = copy.deepcopy(LIBVIRT_NFT)
    other['nftables'][6]['rule']['expr'][0]['match']['right'] = 'virbr9'
    view = healthy_view()
    view.nft = H.nft_tables(other)
    assert verdict(view)['checks']['layout']['ok'] is True


SEED = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:LIBVIRT_PRT - [0:0]
[7:420] -A PREROUTING -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.122.10:80
[0:0] -A POSTROUTING -j LIBVIRT_PRT
[0:0] -A LIBVIRT_PRT -s 192.168.122.0/24 -d 224.0.0.0/24 -j RETURN
[0:0] -A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -p tcp -j MASQUERADE --to-ports 1024-65535
[0:0] -A LIBVIRT_PRT -s 192.168.122.0/24 ! -d 192.168.122.0/24 -j MASQUERADE
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:LIBVIRT_FWI - [0:0]
:LIBVIRT_FWO - [0:0]
:LIBVIRT_FWX - [0:0]
[0:0] -A FORWARD -j LIBVIRT_FWX
[7:420] -A FORWARD -j LIBVIRT_FWI
[0:0] -A FORWARD -j LIBVIRT_FWO
[0:0] -A FORWARD -d 192.168.122.10/32 -p tcp -m tcp --dport 80 -j ACCEPT
[0:0] -A LIBVIRT_FWI -d 192.168.122.0/24 -o virbr0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
[7:420] -A LIBVIRT_FWI -o virbr0 -j REJECT --reject-with icmp-port-unreachable
[0:0] -A LIBVIRT_FWO -s 192.168.122.0/24 -i virbr0 -j ACCEPT
[0:0] -A LIBVIRT_FWO -i virbr0 -j REJECT --reject-with icmp-port-unreachable
[0:0] -A LIBVIRT_FWX -i virbr0 -o virbr0 -j ACCEPT
COMMIT
"""


def test_the_seeds_hand_made_setup_is_diagnosed_with_its_three_causes():
    view = healthy_view(S.parse_save(SEED))
    view.desired = {}
    result = verdict(view)
    assert result['checks']['jumps']['ok'] is None          # not kvmnet.nat's: nothing to say about our jumps
    assert result['failed'] == 'rules'
    causes = [c['cause'] for c in result['causes'] if c['check'] == 'rules']
    assert len(causes) == 3, causes
    assert 'LIBVIRT_FWI rule 2 (-o virbr0 -j REJECT --reject-with icmp-port-unreachable) rejects tcp/8080' in causes[0]
    assert 'before the accept at filter FORWARD rule 4' in causes[0]
    assert 'No MASQUERADE for hairpin traffic' in causes[1]
    assert 'has no -d' in causes[2]
    assert 'DNAT 7, FORWARD accept - packet(s)' in result['checks']['counters']['detail']


def test_saved_file_out_of_date_or_damaged():
    view = healthy_view()
    fam = view.families[4]
    fam.saved_path = '/etc/iptables/kvmnet-nat.v4'
    fam.saved_text = K.persist_text(view.desired[4], 'nft')
    assert verdict(view)['checks']['saved']['ok'] is True
    older = [f for f in forwards() if f.label != 'web01 tcp/8080->80']
    fam.saved_text = K.persist_text(R.desired_state(older, 4), 'nft')
    result = verdict(view)
    assert (result['failed'], result['checks']['saved']['ok']) == ('saved', False)
    assert 'does not hold this forward' in result['cause']
    other = verdict(view, 'app02 tcp/8443->443')
    assert other['failed'] == 'saved' and 'out of date' in other['cause']
    fam.saved_text = K.persist_text(view.desired[4], 'nft').replace('8080', '8081')
    assert 'checksum does not match' in verdict(view)['cause']
    fam.saved_text = None
    assert 'a reboot restores none' in verdict(view)['cause']


def test_probe_counts_are_reported():
    view = healthy_view()
    fwd = forward()
    view.probes[fwd.label] = {'address': PUB, 'delta': 1, 'answer': "the guest answered 'web01 203.0.113.10'"}
    assert D.diagnose(fwd, view)['checks']['counters']['ok'] is True
    view.probes[fwd.label] = {'address': PUB, 'delta': 0, 'answer': 'got no answer (refused)',
                              'taken': 'no DNAT rule in nat OUTPUT takes it'}
    result = D.diagnose(fwd, view)
    assert result['failed'] == 'counters' and 'was not DNATed' in result['cause']


def test_unresolved_forward_and_the_table():
    view = healthy_view()
    results = [verdict(break_it('service down')), verdict(view, 'dns01 udp/5353->53'),
               D.unresolved('ghost', 'ghost tcp/9000->9000', 'no lease')]
    lines = D.table(results)
    assert lines[0].split()[:3] == ['forward', 'forwarding', 'layout'] and lines[0].split()[-1] == 'verdict'
    assert lines[1].startswith('web01 tcp/8080->80') and lines[1].endswith('broken (guest)')
    assert lines[2].endswith('ok') and '\u2013' in lines[2]      # UDP without send/expect: not checked
    assert lines[3].endswith('broken (guest)')
    assert any(line.startswith('web01 tcp/8080->80 [guest]: web01 refuses tcp/80') for line in lines)
    assert any(line.startswith('ghost tcp/9000->9000 [guest]: No address is known for ghost') for line in lines)


def test_network_routers_from_dnsmasq_options():
    assert L.parse_network_xml(NETWORK_XML)['routers'] == {}
    assert L.parse_network_xml(NETWORK_XML_ELSEWHERE)['routers'] == {4: '192.168.122.254'}
    none = NETWORK_XML_ELSEWHERE.replace('option:router,192.168.122.254', '3')
    assert L.parse_network_xml(none)['routers'] == {4: ''}


def test_iptables_nft_tables_are_left_to_the_walk_even_with_native_rules_only():
    docker = {'nftables': [
        {'table': {'family': 'ip', 'name': 'filter'}},
        {'chain': {'family': 'ip', 'table': 'filter', 'name': 'FORWARD', 'hook': 'forward', 'policy': 'drop'}},
        {'rule': {'family': 'ip', 'table': 'filter', 'chain': 'FORWARD', 'expr': [{'drop': None}]}}]}
    view = healthy_view()
    view.nft = H.nft_tables(docker)
    assert view.nft[0]['iptables'] is True
    assert verdict(view)['checks']['layout']['ok'] is True


def test_the_trail_names_only_the_jumps_still_open():
    """A jump that returned (FORWARD rule 1 into LIBVIRT_FWX, back) is not part of the way to the rule."""
    steps = [('FORWARD', 1, '-j LIBVIRT_FWX'), ('FORWARD', 2, '-j LIBVIRT_FWI'), ('LIBVIRT_FWI', 2, '-j REJECT')]
    assert D._call_stack(steps) == steps[1:]
    nested = [('FORWARD', 1, '-j A'), ('A', 3, '-j B'), ('A', 4, '-j C'), ('C', 1, '-j DROP')]
    assert D._call_stack(nested) == [nested[0], nested[2], nested[3]]


# ---------------------------------------------------------------- every table, in the kernel's order (issue 19)

BUILTIN = {'raw': ('PREROUTING', 'OUTPUT'), 'mangle': ('PREROUTING', 'INPUT', 'FORWARD', 'OUTPUT', 'POSTROUTING'),
           'security': ('INPUT', 'FORWARD', 'OUTPUT')}


def with_rules(*rules, view=None):
    """A healthy view with hand-made rules (table, chain, spec, position: 'I' first, 'A' last) added."""
    view = view or healthy_view()
    tables = view.families[4].tables
    for table_name, chain, spec, how in rules:
        table = tables.setdefault(table_name, S.Table(table_name, {c: 'ACCEPT' for c in BUILTIN.get(table_name, ())},
                                                      {c: [] for c in BUILTIN.get(table_name, ())}))
        if chain not in table.chains:
            table.chains[chain] = '-'
        chain_rules = table.rules.setdefault(chain, [])
        chain_rules.insert(0 if how == 'I' else len(chain_rules), spec)
    return view


GUEST_IP = '192.168.122.10'


@pytest.mark.parametrize('rules, check, words', [
    # the examples: the client times out, the doctor said ok
    ([('raw', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j DROP', 'A')], 'rules',
     ['raw PREROUTING rule 1 (-p tcp -m tcp --dport 8080 -j DROP) drops tcp/8080 to 203.0.113.10 before any DNAT']),
    ([('mangle', 'FORWARD', '-d %s/32 -j DROP' % GUEST_IP, 'A')], 'rules',
     ['mangle FORWARD rule 1 (-d 192.168.122.10/32 -j DROP) drops tcp/8080 to 192.168.122.10 after the DNAT']),
    ([('mangle', 'PREROUTING', '-i eth0 -p tcp -j DROP', 'I')], 'rules', ['mangle PREROUTING rule 1', 'before any DNAT']),
    ([('security', 'FORWARD', '-o virbr0 -j DROP', 'A')], 'rules', ['security FORWARD rule 1 (-o virbr0 -j DROP) drops']),
    ([('mangle', 'POSTROUTING', '-o virbr0 -p tcp -m tcp --dport 80 -j DROP', 'I')], 'rules', ['mangle POSTROUTING rule 1']),
    # raw runs before conntrack: every packet there is INVALID to --ctstate
    ([('raw', 'PREROUTING', '-m conntrack --ctstate INVALID -j DROP', 'A')], 'rules', ['raw PREROUTING rule 1']),
    # untracked: the nat table never sees it
    ([('raw', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j CT --notrack', 'A')], 'rules',
     ['exempts tcp/8080 to 203.0.113.10 from connection tracking']),
    # a user chain in mangle, reached by a jump
    ([('mangle', 'HARDEN', '-p tcp -m tcp --dport 80 -j DROP', 'A'), ('mangle', 'FORWARD', '-j HARDEN', 'A')], 'rules',
     ['mangle FORWARD rule 1 -> HARDEN rule 1']),
])
def test_a_drop_in_any_table_is_named(rules, check, words):
    result = verdict(with_rules(*rules))
    assert (result['verdict'], result['failed']) == ('broken', check), result['causes']
    for word in words:
        assert word in result['cause'], result['cause']
    assert result['checks'][check]['ok'] is False


@pytest.mark.parametrize('rules', [
    # the hardening recipe: a first packet is NEW, not INVALID, once conntrack has seen it (mangle runs after it)
    [('mangle', 'PREROUTING', '-m conntrack --ctstate INVALID -j DROP', 'I')],
    [('mangle', 'PREROUTING', '-p tcp -m tcp ! --tcp-flags FIN,SYN,RST,ACK SYN -m conntrack --ctstate NEW -j DROP', 'I')],
    [('raw', 'PREROUTING', '-p udp -m udp --dport 8080 -j DROP', 'A')],               # another protocol
    [('mangle', 'FORWARD', '-d 192.168.122.99/32 -j DROP', 'A')],                    # another guest
    [('security', 'FORWARD', '-s 192.168.122.99/32 -i virbr0 -o eth0 -j DROP', 'A')],  # another guest's replies
    [('mangle', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j MARK --set-xmark 0x1/0xffffffff', 'A'),
     ('raw', 'PREROUTING', '-j ACCEPT', 'I')],                                       # ACCEPT in raw ends raw only
])
def test_rules_in_other_tables_that_spare_the_forward_stay_green(rules):
    result = verdict(with_rules(*rules))
    assert result['verdict'] == 'ok', result['causes']


HAIRPIN = 'hairpin'


@pytest.mark.parametrize('rules, words', [
    ([('raw', 'PREROUTING', '-i virbr0 -p tcp -m tcp --dport 8080 -j DROP', 'A')],
     ['Hairpin traffic stops', 'are meant for web01 at 192.168.122.10', 'raw PREROUTING rule 1']),
    ([('mangle', 'PREROUTING', '-s 192.168.122.0/24 -d 203.0.113.10/32 -j DROP', 'A')], ['mangle PREROUTING rule 1']),
    ([('mangle', 'FORWARD', '-i virbr0 -o virbr0 -j DROP', 'A')], ['are DNATed to web01', 'mangle FORWARD rule 1']),
    ([('security', 'FORWARD', '-i virbr0 -o virbr0 -j DROP', 'A')], ['security FORWARD rule 1']),
    ([('filter', 'FORWARD', '-i virbr0 -o virbr0 -j REJECT', 'I')], ['filter FORWARD rule 1', 'rejects them']),
])
def test_hairpin_packets_walk_every_table_too(rules, words):
    """Guests that connect to the public address: cut while outside clients still get through."""
    result = verdict(with_rules(*rules))
    assert (result['verdict'], result['failed']) == ('broken', 'rules'), result['causes']
    for word in words:
        assert word in result['cause'], result['cause']
    assert 'before any DNAT' not in result['cause'] and 'after the DNAT' not in result['cause']


@pytest.mark.parametrize('rules, verdict_, words', [
    # an ACCEPT above our jump that takes the packet is what our accept would do
    ([('filter', 'FORWARD', '-i eth0 -o virbr0 -j ACCEPT', 'I')], 'ok', 'which accepts the packet as ours would'),
    ([('filter', 'FORWARD', '-j ACCEPT', 'I')], 'ok', 'which accepts the packet as ours would'),
    ([('nat', 'PREROUTING', '-d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.122.10:80',
       'I')], 'ok', 'which dnats the packet as ours would'),
    # ... one that stops it or takes it elsewhere is a break
    ([('filter', 'FORWARD', '-i eth0 -o virbr0 -j DROP', 'I')], 'broken', 'Above our jump in filter FORWARD'),
    ([('nat', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j ACCEPT', 'I')], 'broken', 'Above our jump in nat PREROUTING'),
    ([('nat', 'PREROUTING', '-p tcp -j REDIRECT --to-ports 3128', 'I')], 'broken', 'Above our jump in nat PREROUTING'),
])
def test_a_rule_above_our_jump_is_a_break_only_if_it_breaks(rules, verdict_, words):
    result = verdict(with_rules(*rules))
    assert result['verdict'] == verdict_, result['causes']
    text = result['checks']['jumps']['detail'] + ' ' + (result['cause'] or '')
    assert words in text, text


def test_twelve_thousand_source_drops_above_the_accept():
    """Issue 19: a ValueError ("a loop in the rules") before. The walk finishes; the blocklist depends on the
    client's address, so it is noted, not a verdict; a client in the allow-list is walked exactly."""
    drops = ['-s 198.51.%d.%d/32 -j DROP' % (100 + i // 250, i % 250) for i in range(12000)]
    view = with_rules(*[('filter', 'FORWARD', spec, 'I') for spec in reversed(drops)])
    result = verdict(view)
    assert result['verdict'] == 'ok', result['causes']
    assert 'stops some clients: filter FORWARD rule 1 (-s 198.51.100.0/32 -j DROP) and 11999 more' in \
        result['checks']['rules']['detail']
    ssh = verdict(view, 'web01 tcp/2222->22')                  # sources 198.51.100.0/24: its client is 198.51.100.1
    assert (ssh['verdict'], ssh['failed']) == ('broken', 'jumps'), ssh['causes']
    assert 'filter FORWARD rule 2 (-s 198.51.100.1/32 -j DROP) drops' in ssh['cause']


@pytest.mark.parametrize('rules, words', [
    ([('filter', 'LOOP_A', '-j LOOP_B', 'A'), ('filter', 'LOOP_B', '-p tcp -j LOOP_A', 'A'),
      ('filter', 'FORWARD', '-j LOOP_A', 'I')], 'could not finish: a loop in the rules: FORWARD -> LOOP_A -> LOOP_B -> LOOP_A'),
    ([('mangle', 'M1', '-j M2', 'A'), ('mangle', 'M2', '-j M1', 'A'), ('mangle', 'PREROUTING', '-j M1', 'A')],
     'The walk through mangle PREROUTING could not finish'),
    ([('mangle', 'FORWARD', '-m set --match-set blocked src -j DROP', 'A')],
     'mangle FORWARD rule 1 (-m set --match-set blocked src -j DROP) was not evaluated (the doctor does not read --match-set)'),
    ([('raw', 'PREROUTING', '-m mark --mark 0x1 -j SCREEN', 'A'), ('raw', 'SCREEN', '-j DROP', 'A')],
     'raw PREROUTING rule 1 (-m mark --mark 0x1 -j SCREEN) was not evaluated'),
    ([('security', 'FORWARD', '-p tcp -j SOMETHING_NEW', 'A')], 'security FORWARD rule 1 (-p tcp -j SOMETHING_NEW)'),
    ([('nat', 'PREROUTING', '-m physdev --physdev-in vnet9 -j DNAT --to-destination 192.168.122.99', 'I')],
     'nat PREROUTING rule 1'),
])
def test_what_the_walker_cannot_tell_is_unknown_never_ok(rules, words):
    result = verdict(with_rules(*rules))
    assert (result['verdict'], result['failed']) == ('unknown', 'rules'), result['causes']
    assert result['checks']['rules']['ok'] is None
    assert words in result['cause'], result['cause']
    lines = D.table([result])
    assert lines[1].endswith('unknown (rules)') and any('[rules, unknown]' in line for line in lines)


@pytest.mark.parametrize('rules', [
    [('mangle', 'FORWARD', '-m mark --mark 0x1 -j ACCEPT', 'A')],                   # it could only let it through
    [('filter', 'FORWARD', '-m set --match-set blocked src -j DROP', 'A')],          # below our accept: never met
    [('raw', 'PREROUTING', '-m mark --mark 0x1 -j NOTE', 'A'), ('raw', 'NOTE', '-j LOG', 'A')],   # a chain that only logs
    [('mangle', 'PREROUTING', '-m u32 --u32 0x0 -j LOG', 'A')],                       # a rule that goes on
])
def test_an_unread_match_that_cannot_stop_the_packet_is_no_doubt(rules):
    assert verdict(with_rules(*rules))['verdict'] == 'ok'


def test_the_ruleset_is_indexed_and_each_rule_parsed_once(monkeypatch):
    """5000 hand-made DNATs: a walk tests the rules that can match its port, yet counts every rule it
    passes (the dataplane benchmark reads ``tested``), and no rule is parsed twice."""
    spec = '-d 203.0.113.10/32 -p tcp -m tcp --dport %d -j DNAT --to-destination 192.168.122.%d:80'
    rules = {'PREROUTING': [spec % (10000 + i, 10 + i % 40) for i in range(5000)]}
    parsed = []
    real = W.parse
    monkeypatch.setattr(W, 'parse', lambda spec: parsed.append(spec) or real(spec))
    ruleset = W.Ruleset(rules, {'PREROUTING': 'ACCEPT'}, W.parse)
    for port in (10000, 12345, 14999, 20000):
        out = W.walk(ruleset, 'PREROUTING', {'proto': 'tcp', 'dst': '203.0.113.10', 'dport': port})
        if port < 15000:
            assert (out.target, out.rule[1], out.tested) == ('DNAT', port - 9999, port - 9999)
        else:
            assert (out.target, out.policy, out.tested) == ('ACCEPT', True, 5000)
    assert len(parsed) == 5000


def test_the_live_rules_of_ours_are_read_once_per_run(monkeypatch):
    view = healthy_view()
    calls = []
    owned = R.owned
    monkeypatch.setattr(I._rules, 'owned', lambda *args: calls.append(args) or owned(*args))
    for fwd in forwards():
        D.diagnose(fwd, view)
    first = len(calls)
    for fwd in forwards():
        D.diagnose(fwd, view)
    assert len(calls) - first < first / 2, (first, len(calls))


# ---------------------------------------------------------------- the reply, queues, proxies, per-interface forwarding

def set_sysctl(key, iface, value):
    def change(view):
        view.sysctl.setdefault(key, {})[iface] = value
        return view
    return change


@pytest.mark.parametrize('change, verdict_, check, words', [
    # the review's five: the client times out, the doctor said ok
    (lambda v: with_rules(('mangle', 'FORWARD', '-i virbr0 -o eth0 -j DROP', 'A'), view=v), 'broken', 'rules',
     ["mangle FORWARD rule 1 (-i virbr0 -o eth0 -j DROP) drops web01's replies (tcp from 192.168.122.10:80"]),
    (lambda v: with_rules(('raw', 'PREROUTING', '-i virbr0 -j CT --notrack', 'A'), view=v), 'broken', 'rules',
     ["raw PREROUTING rule 1 (-i virbr0 -j CT --notrack) exempts web01's replies", 'not un-NATed']),
    (lambda v: with_rules(('mangle', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j NFQUEUE --queue-num 5', 'A'), view=v),
     'unknown', 'rules', ['mangle PREROUTING rule 1 (-p tcp -m tcp --dport 8080 -j NFQUEUE --queue-num 5) hands tcp/8080',
                          'no program reading the queue']),
    (lambda v: with_rules(('mangle', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j TPROXY --on-port 3129 --on-ip 0.0.0.0 '
                           '--tproxy-mark 0x1/0x1', 'A'), view=v), 'broken', 'rules',
     ['mangle PREROUTING rule 1 (-p tcp -m tcp --dport 8080 -j TPROXY', 'local transparent proxy']),
    (set_sysctl('forwarding4', 'eth0', '0'), 'broken', 'forwarding',
     ["net.ipv4.conf.eth0.forwarding is 0 (the clients' packets arrive on it)", 'sysctl -w net.ipv4.conf.eth0.forwarding=1']),
    # more of the same kind
    (set_sysctl('forwarding4', 'virbr0', '0'), 'broken', 'forwarding',
     ["net.ipv4.conf.virbr0.forwarding is 0 (the guest's replies arrive on it)"]),
    (lambda v: with_rules(('security', 'FORWARD', '-s 192.168.122.10/32 -p tcp -m tcp --sport 80 -j REJECT', 'A'), view=v),
     'broken', 'rules', ["security FORWARD rule 1 (-s 192.168.122.10/32 -p tcp -m tcp --sport 80 -j REJECT) rejects web01's"]),
    (lambda v: with_rules(('mangle', 'POSTROUTING', '-o eth0 -m conntrack --ctstate ESTABLISHED -j DROP', 'I'), view=v),
     'broken', 'rules', ["mangle POSTROUTING rule 1", "drops web01's replies"]),
    (lambda v: with_rules(('mangle', 'FORWARD', '-i virbr0 -j QUEUE', 'A'), view=v), 'unknown', 'rules',
     ["mangle FORWARD rule 1 (-i virbr0 -j QUEUE) hands web01's replies"]),
    (lambda v: with_rules(('mangle', 'FORWARD', '-o virbr0 -j NFQUEUE --queue-num 1', 'A'), view=v), 'unknown', 'rules',
     ['mangle FORWARD rule 1 (-o virbr0 -j NFQUEUE --queue-num 1) hands tcp/8080 to 192.168.122.10']),
    (lambda v: with_rules(('mangle', 'HANDOFF', '-j TPROXY --on-port 3129 --on-ip 0.0.0.0 --tproxy-mark 0x1/0x1', 'A'),
                          ('mangle', 'PREROUTING', '-m mark --mark 0x9 -j HANDOFF', 'A'), view=v), 'unknown', 'rules',
     ['mangle PREROUTING rule 1 (-m mark --mark 0x9 -j HANDOFF) was not evaluated']),
    (lambda v: with_rules(('mangle', 'FORWARD', '-i virbr0 -m mark --mark 0x1 -j DROP', 'A'), view=v), 'unknown', 'rules',
     ['replies: mangle FORWARD rule 1 (-i virbr0 -m mark --mark 0x1 -j DROP) was not evaluated']),
    (lambda v: with_rules(('raw', 'PREROUTING', '-i virbr0 -m mark --mark 0x1 -j CT --notrack', 'A'), view=v), 'unknown',
     'rules', ['replies: raw PREROUTING rule 1 (-i virbr0 -m mark --mark 0x1 -j CT --notrack) was not evaluated']),
    (lambda v: with_rules(('filter', 'FORWARD', '-o eth0 -m conntrack --ctorigdst 203.0.113.10 --ctreplsrc '
                           '192.168.122.10 -j DROP', 'I'), view=v), 'broken', 'rules', ["filter FORWARD rule 1", "drops web01's"]),
    (lambda v: with_rules(('mangle', 'FORWARD', '-o eth0 -m conntrack --ctdir REPLY -j DROP', 'A'), view=v),
     'broken', 'rules', ["mangle FORWARD rule 1 (-o eth0 -m conntrack --ctdir REPLY -j DROP) drops web01's replies"]),
    # what spares the forward stays green
    (lambda v: with_rules(('mangle', 'PREROUTING', '-p tcp -m tcp --dport 8080 -j NFQUEUE --queue-num 5 --queue-bypass',
                           'A'), view=v), 'ok', None, []),
    (lambda v: with_rules(('mangle', 'FORWARD', '-i virbr0 -o eth1 -j DROP', 'A'), view=v), 'ok', None, []),
    (lambda v: with_rules(('raw', 'PREROUTING', '-i virbr1 -j CT --notrack', 'A'), view=v), 'ok', None, []),
    # a reply's conntrack entry: its original source is the client (outside this host's networks), not the guest
    (lambda v: with_rules(('filter', 'FORWARD', '-i virbr0 -o eth0 -m conntrack --ctorigsrc 192.168.122.0/24 -j DROP',
                           'I'), view=v), 'ok', None, []),
    (lambda v: with_rules(('mangle', 'FORWARD', '-i virbr0 -o eth0 -m conntrack --ctdir ORIGINAL -j DROP', 'A'), view=v),
     'ok', None, []),
    (set_sysctl('forwarding4', 'eth1', '0'), 'ok', None, []),
    (set_sysctl('forwarding6', 'virbr0', '0'), 'ok', None, []),        # IPv6: only the global setting counts
], ids=['mangle-forward-drops-replies', 'raw-notrack-replies', 'nfqueue', 'tproxy', 'eth0-forwarding-0',
        'virbr0-forwarding-0', 'security-rejects-replies', 'mangle-postrouting-drops-replies', 'queue-replies',
        'nfqueue-after-dnat', 'tproxy-behind-unread-jump', 'unread-mark-on-replies', 'unread-notrack-on-replies',
        'ct-reply-tuple-drop', 'ctdir-reply-drop', 'nfqueue-bypass-green', 'other-interface-green', 'other-bridge-notrack-green',
        'ctorigsrc-guests-green', 'ctdir-original-green', 'eth1-forwarding-0-green', 'ipv6-iface-forwarding-green'])
def test_the_reply_queues_proxies_and_interface_forwarding(change, verdict_, check, words):
    """Review 2 (A): the client timed out and the doctor said ok."""
    result = verdict(change(healthy_view()))
    assert (result['verdict'], result['failed']) == (verdict_, check), result['causes']
    for word in words:
        assert word in result['cause'] + ' Fix: ' + result['fix'], result['cause']
    if verdict_ == 'broken':
        assert result['checks'][check]['ok'] is False
    if verdict_ == 'ok':
        assert "-> KVMNAT_FWD rule 1 (-m conntrack --ctstate RELATED,ESTABLISHED" in \
            result['checks']['rules']['detail'].split('replies: filter FORWARD rule ')[1]


def test_a_masqueraded_forwards_replies_come_to_this_hosts_bridge_address():
    """masquerade: always: the reply arrives for 192.168.122.1, the client is put back at nat PREROUTING."""
    fwd = forward('app02 tcp/8443->443')
    view = with_rules(('mangle', 'PREROUTING', '-d 192.168.122.1/32 -i virbr0 -p tcp -m tcp --sport 443 -j DROP', 'A'))
    reply = D.reply_trip(fwd, view)
    assert (reply.packet['dst'], reply.packet['local']) == ('192.168.122.1', True)
    result = D.diagnose(fwd, view)
    assert (result['verdict'], result['failed']) == ('broken', 'rules'), result['causes']
    assert "drops app02's replies" in result['cause']
    assert verdict(view)['verdict'] == 'ok'                     # web01 tcp/8080: not masqueraded, another port


def test_replies_are_walked_once_per_guest_port_and_again_only_for_the_original_port():
    view = with_rules(('mangle', 'FORWARD', '-o eth0 -m conntrack --ctorigdstport 8080 -j DROP', 'A'))
    walks = []
    real = I._walk.walk
    I._walk.walk, saved = (lambda *a, **k: walks.append(a[1]) or real(*a, **k)), real
    try:
        result = verdict(view)
    finally:
        I._walk.walk = saved
    assert (result['verdict'], result['failed']) == ('broken', 'rules'), result['causes']
    assert "mangle FORWARD rule 1 (-o eth0 -m conntrack --ctorigdstport 8080 -j DROP) drops web01's replies" in \
        result['cause']
    assert verdict(view, 'web01 tcp/2222->22')['verdict'] == 'ok'      # its replies' original port is 2222
    assert walks.count('FORWARD') >= 2


# ---------------------------------------------------------------- tables the host does not have (review 2, B)

HAND_MADE = """*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
[3:180] -A PREROUTING -d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 192.168.122.10:80
COMMIT
"""


def without(*names, view=None):
    view = view or healthy_view()
    for name in names:
        view.families[4].tables.pop(name, None)
    return view


def hand_made(view):
    view.families[4].tables = S.parse_save(HAND_MADE)
    view.desired = {}
    return view


def empty_chain(table_name, chain):
    def change(view):
        table = view.families[4].tables[table_name]
        table.rules.pop(chain, None)
        table.chains.pop(chain, None)
        return view
    return change


@pytest.mark.parametrize('change, verdict_, failed, words', [
    (lambda v: without('filter', view=v), 'ok', None, ['filter FORWARD: no filter table (every forwarded packet passes)']),
    (lambda v: without('mangle', view=v), 'ok', None, []),
    (lambda v: without('raw', view=v), 'ok', None, []),
    (lambda v: without('raw', 'mangle', 'security', 'filter', view=v), 'ok', None, []),
    (empty_chain('filter', 'FORWARD'), 'ok', None, []),
    (empty_chain('mangle', 'PREROUTING'), 'ok', None, []),
    # the review's host: a hand-made DNAT, no filter table; the client gets through, guests on the bridge do not
    (hand_made, 'broken', 'rules', ['accept: FORWARD policy ACCEPT', 'replies: FORWARD policy ACCEPT']),
    (lambda v: without('nat', view=v), 'broken', 'jumps', []),
])
def test_a_table_the_host_does_not_have_lets_the_packet_pass(change, verdict_, failed, words):
    result = verdict(change(healthy_view()))
    assert (result['verdict'], result['failed']) == (verdict_, failed), result['causes']
    text = ' '.join(check['detail'] for check in result['checks'].values())
    for word in words:
        assert word in text, text
    if change is hand_made:
        assert [c['cause'][:33] for c in result['causes']] == ['No MASQUERADE for hairpin traffic']


def test_walks_through_what_is_not_there_pass():
    assert (BACKEND.walk({}, 'nat', 'FORWARD', {}).target, BACKEND.walk({}, 'nat', 'FORWARD', {}).policy) == \
        ('ACCEPT', True)
    nat = S.parse_save(HAND_MADE)['nat']
    assert BACKEND.walk({'nat': nat}, 'nat', 'NOSUCH', {}).target == 'ACCEPT'
    view = healthy_view()
    assert D.walk_in(view, 6, 'filter', 'FORWARD', {}).target == 'ACCEPT'
    assert D.dnat_to(view, BACKEND.passes()) == (None, None)
