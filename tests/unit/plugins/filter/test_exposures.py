# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The inventory filters and the one schema of a port declaration, on plain hostvars dicts."""

from __future__ import annotations

import copy

import pytest

from ansible.errors import AnsibleFilterError

from ansible_collections.kvmnet.nat.plugins.filter import exposures as F

HOSTVARS = {
    'hv1': {'expose_public_ip': '203.0.113.10', 'expose_guest_domains': {'app02': 'app02-vm'},
            'expose_guests': [{'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'host': 8080, 'guest': 80}]}]},
    'hv2': {},
    'app01': {'expose_hypervisor': 'hv1', 'expose_ports': [{'host': 8443, 'guest': 443}]},
    'app02': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'app02-vm', 'expose_guest_ip': '192.168.122.13',
              'expose_masquerade': 'always', 'expose_ports': [{'host': 9000}]},
    'db01': {'expose_hypervisor': 'hv2', 'expose_ports': [{'host': 5432}]},
    'quoted': {'expose_hypervisor': 'hv1"]||`x`', 'expose_ports': [{'host': 1}]},
}


@pytest.mark.parametrize('hypervisor, expected', [
    ('hv1', [{'name': 'app01', 'declared_by': 'app01', 'ports': [{'host': 8443, 'guest': 443}]},
             {'name': 'app02-vm', 'declared_by': 'app02', 'ip': '192.168.122.13', 'masquerade': 'always',
              'ports': [{'host': 9000}]}]),
    ('hv2', [{'name': 'db01', 'declared_by': 'db01', 'ports': [{'host': 5432}]}]),
    ('hv3', []),
    ('hv1"]||`x`', [{'name': 'quoted', 'declared_by': 'quoted', 'ports': [{'host': 1}]}]),  # names are data
])
def test_guest_exposures(hypervisor, expected):
    assert F.guest_exposures(HOSTVARS, hypervisor, guest_domains=HOSTVARS['hv1']['expose_guest_domains']) == expected


def test_declared_exposures_merges_both_styles():
    names = [g['name'] for g in F.declared_exposures(HOSTVARS, 'hv1')]
    assert names == ['web01', 'app01', 'app02-vm']


def _with(host, **variables):
    hostvars = copy.deepcopy(HOSTVARS)
    hostvars.pop('quoted')
    hostvars[host].update(variables)
    return hostvars


def _port(host, port):
    """A hostvars where ``host`` declares one port, in its style."""
    if host == 'hv1':
        return _with('hv1', expose_guests=[{'name': 'web01', 'ip': '192.168.122.10', 'ports': [port]}])
    hostvars = _with(host, expose_ports=[port])
    hostvars['hv1']['expose_guests'] = []            # nothing else claims the table's ports
    hostvars['hv1']['expose_guest_side_may_set'] = list(EVERY_CHOICE)    # the schema alone, on both sides
    return hostvars


EVERY_CHOICE = ('public_ip', 'in_interface', 'allow_in_use')

BAD_PORTS = [
    ({'host': 5353, 'guest': 53, 'protocol': 'udp'}, "unknown key 'protocol' (did you mean 'proto'?)"),
    ({'host': 5353, 'guest': 53, 'source': ['198.51.100.0/24']}, "unknown key 'source' (did you mean 'sources'?)"),
    ({'host': 5353, 'gest': 53}, "unknown key 'gest' (did you mean 'guest'?)"),
    ({'host': 5353, 'proto': 'TCP'}, "proto 'TCP' must be one of tcp, udp, sctp (did you mean 'tcp'?)"),
    ({'host': 5353, 'proto': 'icmp'}, "proto 'icmp' must be one of tcp, udp, sctp"),
    ({'host': 5353, 'sources': '198.51.100.0/24'}, 'sources must be a list of addresses or networks'),
    ({'host': 5353, 'sources': ['198.51.100.7/24']}, 'sources[0]: network 198.51.100.7/24 has host bits set'),
    ({'host': 8080.0}, "host: port 8080.0 is a fraction, not a port"),
    ({'host': True}, 'host: port True is not a number'),
    ({'host': 8080, 'guest': False}, 'guest: port False is not a number'),
    ({'host': '10000:10009', 'guest': '20000-20004'}, None),      # sizes differ: the module says so, not the schema
    ({'guest': 80}, 'no "host"'),
    ({'host': 8080, 'allow_in_use': 'yes'}, "allow_in_use must be true or false, not 'yes'"),
    ({'host': 8080, 'public_ip': '203.0.113.10%1\n-F'}, 'has a zone id'),
    ({'host': 8080, 'in_interface': 'eth0\n'}, "in_interface 'eth0\\n' is not an interface name"),
    ({'host': 8080, 'expect': '(unclosed'}, "expect '(unclosed' is not a regular expression"),
    ({'host': 8080, 'masquerade': 'sometimes'}, "masquerade 'sometimes' must be one of auto, always, never"),
    ('8080', "a port declaration is a mapping like {host: 8080, guest: 80}, not '8080' (write {host: 8080})"),
]


@pytest.mark.parametrize('host, where', [('hv1', 'hv1: expose_guests[0] (web01) ports[0]'),
                                         ('app01', 'app01: expose_ports[0]')])
@pytest.mark.parametrize('port, expected', BAD_PORTS, ids=[str(i) for i in range(len(BAD_PORTS))])
def test_a_bad_port_declaration_is_refused_naming_host_guest_and_key(host, where, port, expected):
    hostvars = _port(host, port)
    if expected is None:
        F.declared_exposures(hostvars, 'hv1')
        return
    with pytest.raises(AnsibleFilterError) as exc:
        F.declared_exposures(hostvars, 'hv1')
    text = str(exc.value)
    assert '%s: ' % where in text and expected in text, text
    assert text.startswith('1 problem(s) in the inventory, nothing was changed')


@pytest.mark.parametrize('variables, expected', [
    ({'expose_ports': '8080'}, "app01: expose_ports must be a list of port declarations like [{host: 8080, guest: 80}], "
                               "not '8080'"),
    ({'expose_guest_ip': '192.168.122.300'}, "app01: expose_guest_ip: address '192.168.122.300' is not an IP address"),
    ({'expose_masquerade': 'Auto'}, "app01: expose_masquerade 'Auto' must be one of auto, always, never (did you "
                                    "mean 'auto'?)"),
    ({'expose_guest_name': 'bad name'}, "app01: expose_guest_name 'bad name' must be a libvirt domain name"),
    ({'expose_guest_network': '0.0.0.0/0'}, 'app01: expose_guest_network: network 0.0.0.0/0 is every address'),
])
def test_bad_guest_side_variables(variables, expected):
    with pytest.raises(AnsibleFilterError) as exc:
        F.declared_exposures(_with('app01', **variables), 'hv1')
    assert expected in str(exc.value), str(exc.value)


@pytest.mark.parametrize('guest, expected', [
    ({'name': 'web01', 'ports': [], 'protocol': 'tcp'}, "hv1: expose_guests[0]: unknown key 'protocol'"),
    ({'name': 'web01', 'adress': '192.168.122.10', 'ports': []}, "unknown key 'adress' (did you mean 'ip'?)"),
    ({'name': 'web01'}, 'hv1: expose_guests[0] (web01): ports must be a list of port declarations'),
    ('web01', "hv1: expose_guests[0]: a guest is a mapping like {name: web01, ports: [...]}, not 'web01'"),
])
def test_bad_hypervisor_side_guests(guest, expected):
    with pytest.raises(AnsibleFilterError) as exc:
        F.declared_exposures(_with('hv1', expose_guests=[guest]), 'hv1')
    assert expected in str(exc.value), str(exc.value)


def test_every_problem_at_once_across_both_styles():
    hostvars = _with('hv1', expose_guests=[{'name': 'web01', 'ports': [{'host': 1, 'protocol': 'udp'}]}])
    hostvars['app01']['expose_ports'] = [{'host': 2, 'source': []}]
    hostvars['app02']['expose_hypervisor'] = 1
    with pytest.raises(AnsibleFilterError) as exc:
        F.declared_exposures(hostvars, 'hv1')
    text = str(exc.value)
    assert text.startswith('3 problem(s)')
    assert "hv1: expose_guests[0] (web01) ports[0]: unknown key 'protocol'" in text
    assert "app01: expose_ports[0]: unknown key 'source'" in text
    assert 'app02: expose_hypervisor must be the inventory name of a hypervisor (text), not 1' in text


def test_a_port_claimed_by_two_guest_hosts_is_refused_naming_both():
    hostvars = _with('app02', expose_ports=[{'host': 8443}])
    with pytest.raises(AnsibleFilterError) as exc:
        F.declared_exposures(hostvars, 'hv1')
    assert 'app02-vm tcp/8443 (declared by app02) and app01 tcp/8443 (declared by app01) claim the same port ' \
           'on the public address' in str(exc.value)


def test_ports_on_different_public_addresses_or_protocols_are_fine():
    hostvars = _with('app02', expose_ports=[{'host': 8443, 'public_ip': '203.0.113.11'}, {'host': 8443, 'proto': 'udp'}])
    hostvars['hv1']['expose_guest_side_may_set'] = ['public_ip']
    assert len(F.declared_exposures(hostvars, 'hv1')) == 3


def test_everything_the_module_supports_per_port_is_accepted_on_both_sides():
    port = {'host': '10000:10009', 'guest': '20000-20009', 'proto': 'sctp', 'sources': ['198.51.100.0/24'],
            'allow_in_use': True, 'public_ip': '203.0.113.11', 'in_interface': 'eth0', 'masquerade': 'never',
            'send': 'ping', 'expect': '^web'}
    for host in ('hv1', 'app01'):
        exposures = F.declared_exposures(_port(host, port), 'hv1')
        declared = [g for g in exposures if g['declared_by'] == host][0]
        assert declared['ports'] == [dict(port, host='10000-10009')]


@pytest.mark.parametrize('play, expected', [
    (['hv1', 'hv2'], [{'host': 'lost', 'expose_hypervisor': 'hv9'}]),
    (['hv1'], [{'host': 'db01', 'expose_hypervisor': 'hv2'}, {'host': 'lost', 'expose_hypervisor': 'hv9'}]),
])
def test_orphan_guests(play, expected):
    hostvars = _with('hv2')
    hostvars['lost'] = {'expose_hypervisor': 'hv9', 'expose_ports': []}
    assert F.orphan_guests(hostvars, play) == expected


def test_orphans_know_a_hypervisor_by_its_expose_hypervisor_name():
    hostvars = {'hv1': {'expose_hypervisor_name': 'rack1-a'}, 'app': {'expose_hypervisor': 'rack1-a'}}
    assert F.orphan_guests(hostvars, ['hv1']) == []


def test_exposure_forwards():
    exposures = [{'name': 'web01', 'ip': '192.168.122.10', 'guest_network': '192.168.122.0/24', 'ports': [
        {'host': 8080, 'guest': 80},
        {'host': 5353, 'guest': 53, 'proto': 'udp', 'sources': ['198.51.100.0/24'], 'masquerade': 'never',
         'public_ip': '203.0.113.11', 'in_interface': 'eth0', 'allow_in_use': True},
    ]}, {'name': 'app02', 'ip': '192.168.122.13', 'masquerade': 'always', 'ports': [{'host': '10000-10009'}]}]
    assert F.exposure_forwards(exposures) == [
        {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80, 'proto': 'tcp',
         'sources': [], 'masquerade': 'auto', 'guest_network': '192.168.122.0/24'},
        {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 5353, 'guest_port': 53, 'proto': 'udp',
         'sources': ['198.51.100.0/24'], 'masquerade': 'never', 'guest_network': '192.168.122.0/24',
         'public_ip': '203.0.113.11', 'in_interface': 'eth0', 'allow_in_use': True},
        {'guest': 'app02', 'guest_ip': '192.168.122.13', 'host_port': '10000-10009', 'guest_port': '10000-10009',
         'proto': 'tcp', 'sources': [], 'masquerade': 'always'},
    ]


def test_exposure_forwards_for_the_doctor_keep_send_expect_and_allow_no_ip():
    exposures = [{'name': 'dns01', 'ports': [{'host': 5353, 'guest': 53, 'proto': 'udp', 'send': 'ping', 'expect': '^dns'}]}]
    assert F.exposure_forwards(exposures, doctor=True) == [
        {'guest': 'dns01', 'host_port': 5353, 'guest_port': 53, 'proto': 'udp', 'sources': [], 'masquerade': 'auto',
         'send': 'ping', 'expect': '^dns'}]
    exposures[0]['ip'] = '192.168.122.11'
    assert 'send' not in F.exposure_forwards(exposures)[0]          # kvmnet.nat.forwards takes no send/expect


@pytest.mark.parametrize('exposures, message', [
    ([{'ip': '192.168.122.10', 'ports': []}], 'an exposure without a name'),
    ([{'name': 'web01', 'ports': [{'host': 1}]}], 'guest web01 has no ip'),
    ([{'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'guest': 1}]}], 'guest web01: a port without "host"'),
])
def test_exposure_forwards_refuses(exposures, message):
    with pytest.raises(AnsibleFilterError) as exc:
        F.exposure_forwards(exposures)
    assert message in str(exc.value)


def test_resolve_exposures_takes_the_module_result():
    exposures = [{'name': 'web01', 'ip': '192.168.122.10', 'ports': []}, {'name': 'app01', 'ports': []},
                 {'name': 'ghost', 'ports': []}]
    addresses = {'guests': [{'name': 'web01', 'ip': '192.168.122.10'}, {'name': 'app01', 'ip': '192.168.122.77'}],
                 'unresolved': [{'name': 'ghost', 'reason': 'no libvirt domain of that name on this host'}]}
    result = F.resolve_exposures(exposures, addresses)
    assert [e['ip'] for e in result['exposures']] == ['192.168.122.10', '192.168.122.77']
    assert result['unresolved'] == [{'name': 'ghost', 'reason': 'no libvirt domain of that name on this host'}]


def test_missing_jmespath_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(F, 'jmespath', None)
    with pytest.raises(AnsibleFilterError) as exc:
        F.guest_exposures(HOSTVARS, 'hv1')
    assert 'needs the Python package jmespath on the controller' in str(exc.value)


def test_the_roles_own_expose_guests_win_over_hostvars():
    """Role parameters and play variables are not in hostvars: the role passes expose_guests itself."""
    guests = [{'name': 'ghost01', 'ports': [{'host': 8081, 'guest': 80}]}]
    names = [g['name'] for g in F.declared_exposures(HOSTVARS, 'hv1', 'hv1', guests)]
    assert names == ['ghost01', 'app01', 'app02-vm']
    with pytest.raises(AnsibleFilterError) as exc:
        F.declared_exposures(HOSTVARS, 'hv1', 'hv1', [{'name': 'web01', 'ports': [{'host': 1, 'protocol': 'udp'}]}])
    assert "hv1: expose_guests[0] (web01) ports[0]: unknown key 'protocol'" in str(exc.value)


class _CountingHostvars(dict):
    """hostvars that count how often each host's variables are assembled (``hostvars[name]``)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads = {}

    def __getitem__(self, name):
        self.reads[name] = self.reads.get(name, 0) + 1
        return super().__getitem__(name)


def _outcome(call):
    try:
        return call()
    except AnsibleFilterError as exc:
        return 'refused: %s' % exc


def _cases():
    yield HOSTVARS
    for port, _expected in BAD_PORTS:
        yield _port('hv1', port)
        yield _port('app01', port)
    for variables in ({'expose_ports': '8080'}, {'expose_guest_ip': '192.168.122.300'},
                      {'expose_hypervisor': 1}, {'expose_hypervisor': ''}, {'expose_hypervisor': ['hv1']}):
        yield _with('app01', **variables)
    yield _with('app02', expose_ports=[{'host': 8443}])


@pytest.mark.parametrize('hostvars', list(_cases()))
def test_read_once_the_guest_hosts_give_the_same_exposures_and_the_same_refusals(hostvars):
    """The index the role reads once per play changes nothing of what either filter answers."""
    index = F.guest_hosts(hostvars)
    for hypervisor in ('hv1', 'hv2', 'hv3'):
        assert _outcome(lambda: F.declared_exposures(hostvars, hypervisor, guest_hosts=index)) == \
            _outcome(lambda: F.declared_exposures(hostvars, hypervisor))
    for play in (['hv1', 'hv2'], ['hv1'], []):
        assert F.orphan_guests(hostvars, play, guest_hosts=index) == F.orphan_guests(hostvars, play)


def test_guest_hosts_groups_the_hosts_that_name_a_hypervisor_with_the_variables_they_set():
    index = F.guest_hosts(_with('app01', expose_hypervisor=['hv1']))
    assert list(index['by_hypervisor']) == ['hv1', 'hv2']
    assert index['by_hypervisor']['hv1'] == {'app02': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'app02-vm',
                                                       'expose_guest_ip': '192.168.122.13', 'expose_masquerade': 'always',
                                                       'expose_ports': [{'host': 9000}]}}
    assert index['not_text'] == {'app01': {'expose_hypervisor': ['hv1'], 'expose_ports': [{'host': 8443, 'guest': 443}]}}


def test_with_guest_hosts_a_fleet_reads_each_hosts_variables_once_not_once_per_hypervisor():
    fleet = {'hv%d' % i: {'expose_guests': []} for i in range(20)}
    fleet.update(('g%d' % i, {'expose_hypervisor': 'hv%d' % (i % 20), 'expose_ports': [{'host': 1000 + i}]})
                 for i in range(200))
    scanned = _CountingHostvars(fleet)
    for hv in ('hv%d' % i for i in range(20)):
        F.declared_exposures(scanned, hv)
    assert scanned.reads['g0'] == 20 * 2          # every hypervisor reads every guest host, twice

    indexed = _CountingHostvars(fleet)
    index = F.guest_hosts(indexed)
    for hv in ('hv%d' % i for i in range(20)):
        assert F.declared_exposures(indexed, hv, guest_hosts=index) == F.declared_exposures(fleet, hv)
    assert F.orphan_guests(indexed, ['hv%d' % i for i in range(20)], guest_hosts=index) == []
    assert indexed.reads['g0'] == 1
    assert max(count for name, count in indexed.reads.items() if name.startswith('g')) == 1


@pytest.mark.parametrize('index', [[], {'by_hypervisor': []}, {'by_hypervisor': {}}, {'hosts': {}}, 'x',
                                   {'by_hypervisor': {'hv1': {'app01': 'hv1'}}, 'not_text': {}},
                                   {'by_hypervisor': {}, 'not_text': {'app01': None}}])
def test_guest_hosts_that_are_not_the_filters_answer_are_refused(index):
    with pytest.raises(AnsibleFilterError, match='guest_hosts must be what the filter kvmnet.nat.guest_hosts returns'):
        F.declared_exposures(HOSTVARS, 'hv1', guest_hosts=index)


def test_a_guest_host_filed_under_another_hypervisor_in_guest_hosts_is_not_given_to_it():
    """What a hypervisor takes from guest_hosts is still selected by each host's own expose_hypervisor."""
    index = F.guest_hosts(HOSTVARS)
    index['by_hypervisor']['hv1'].update(index['by_hypervisor'].pop('hv2'))
    assert [g['name'] for g in F.declared_exposures(HOSTVARS, 'hv1', guest_hosts=index)] == ['web01', 'app01', 'app02-vm']


# ---------------------------------------------------------------- issue 19: trust boundaries

def _problems(hostvars, hypervisor='hv1', **kwargs):
    """The problem lines declared_exposures names (both ways of reading the guest hosts agree), or []."""
    outcomes = []
    for index in (None, F.guest_hosts(hostvars)):
        try:
            F.declared_exposures(hostvars, hypervisor, guest_hosts=index, **kwargs)
            outcomes.append([])
        except AnsibleFilterError as exc:
            outcomes.append(str(exc).split('\n- ')[1:])
    assert outcomes[0] == outcomes[1]
    return outcomes[0]


def _guest_host(**variables):
    """hv1 with web01, and guest host app01 naming hv1 with ``variables``."""
    return {'hv1': {'expose_guests': [{'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'host': 8080, 'guest': 80}]}]},
            'app01': dict({'expose_hypervisor': 'hv1'}, **variables)}


def _choice_refused(index, key):
    return ('app01: expose_ports[%d]: %s is chosen by the hypervisor side, not by a guest host (to let guest hosts '
            'choose it, set expose_guest_side_may_set: [%s] on hypervisor hv1)' % (index, key, key))


@pytest.mark.parametrize('ports, may_set, expected', [
    # the cases: a neighbour's address, the host's own :80 and :22 taken with allow_in_use
    ([{'host': 8081, 'guest': 80, 'public_ip': '203.0.113.99'}], None, [_choice_refused(0, 'public_ip')]),
    ([{'host': 80, 'allow_in_use': True}], None, [_choice_refused(0, 'allow_in_use')]),
    ([{'host': 22, 'allow_in_use': True}], [], [_choice_refused(0, 'allow_in_use')]),
    ([{'host': 8443, 'in_interface': 'eth0'}], ['public_ip'], [_choice_refused(0, 'in_interface')]),
    ([{'host': 8443}, {'host': 8444, 'public_ip': '203.0.113.11', 'in_interface': 'eth0', 'allow_in_use': True}],
     ['allow_in_use'], [_choice_refused(1, 'public_ip'), _choice_refused(1, 'in_interface')]),
    ([{'host': 8443, 'allow_in_use': False, 'public_ip': '', 'in_interface': None}], None, []),     # nothing chosen
    ([{'host': 8081, 'guest': 80, 'public_ip': '203.0.113.99'}], ['public_ip'], []),
    ([{'host': 80, 'allow_in_use': True, 'in_interface': 'eth0'}], ['allow_in_use', 'in_interface'], []),
])
def test_a_guest_host_chooses_public_ip_interface_or_allow_in_use_only_when_the_hypervisor_lets_it(ports, may_set, expected):
    hostvars = _guest_host(expose_ports=ports)
    if may_set is not None:
        hostvars['hv1']['expose_guest_side_may_set'] = may_set
    assert _problems(hostvars) == expected


@pytest.mark.parametrize('may_set', [['public_ip'], ['public_ip', 'allow_in_use', 'in_interface']])
def test_the_roles_guest_side_may_set_wins_over_hostvars(may_set):
    """The role passes expose_guest_side_may_set itself (role parameters are not in hostvars)."""
    hostvars = _guest_host(expose_ports=[{'host': 8081, 'public_ip': '203.0.113.99'}])
    hostvars['hv1']['expose_guest_side_may_set'] = ['public_ip']
    assert _problems(hostvars, guest_side_may_set=may_set) == []
    assert _problems(hostvars, guest_side_may_set=[]) == [_choice_refused(0, 'public_ip')]


@pytest.mark.parametrize('may_set, expected', [
    ('public_ip', "hv1: expose_guest_side_may_set must be a list of public_ip, in_interface, allow_in_use, not 'public_ip'"),
    (True, 'hv1: expose_guest_side_may_set must be a list of public_ip, in_interface, allow_in_use, not True'),
    (['public-ip'], "hv1: expose_guest_side_may_set: 'public-ip' not one of public_ip, in_interface, allow_in_use"),
    (['sources', 'ip'], "hv1: expose_guest_side_may_set: 'sources', 'ip' not one of public_ip, in_interface, allow_in_use"),
    ([None], 'hv1: expose_guest_side_may_set: None not one of public_ip, in_interface, allow_in_use'),
])
def test_a_wrong_expose_guest_side_may_set_is_refused(may_set, expected):
    hostvars = _guest_host(expose_ports=[{'host': 8443}])
    hostvars['hv1']['expose_guest_side_may_set'] = may_set
    assert _problems(hostvars) == [expected]


def test_guest_exposures_refuses_a_choice_the_hypervisor_did_not_allow():
    hostvars = _guest_host(expose_ports=[{'host': 8081, 'public_ip': '203.0.113.99'}])
    with pytest.raises(AnsibleFilterError) as exc:
        F.guest_exposures(hostvars, 'hv1')
    assert str(exc.value).split('\n- ')[1:] == [_choice_refused(0, 'public_ip')]
    assert F.guest_exposures(hostvars, 'hv1', ['public_ip'])[0]['ports'] == [{'host': 8081, 'public_ip': '203.0.113.99'}]


UNUSABLE = [
    ('127.0.0.1', 'a loopback address'),            # the issue: verify would send FLUSHALL to the controller
    ('0.0.0.0', 'the unspecified address'),
    ('224.0.0.1', 'a multicast address'),
    ('169.254.169.254', 'a link-local address (it needs an interface to mean anything)'),
    ('255.255.255.255', 'the broadcast address'),
    ('::1', 'a loopback address'),
    ('::', 'the unspecified address'),
    ('ff02::1', 'a multicast address'),
    ('fe80::1', 'a link-local address (it needs an interface to mean anything)'),
]


@pytest.mark.parametrize('host, where', [('hv1', 'hv1: expose_guests[0] (web01) ports[0]'),
                                         ('app01', 'app01: expose_ports[0]')])
@pytest.mark.parametrize('address, reason', UNUSABLE)
def test_a_public_ip_no_forward_can_have_is_refused_on_both_sides(host, where, address, reason):
    hostvars = _port(host, {'host': 6379, 'public_ip': address, 'send': 'FLUSHALL\r\n'})
    assert _problems(hostvars) == ['%s: public_ip: address %s is %s; no forward can use it' % (where, address, reason)]


@pytest.mark.parametrize('address, reason', UNUSABLE)
def test_a_guest_ip_no_forward_can_have_is_refused_on_both_sides(address, reason):
    hostvars = _guest_host(expose_guest_ip=address, expose_ports=[{'host': 8443}])
    hostvars['hv1']['expose_guests'][0]['ip'] = address
    assert _problems(hostvars) == [
        'hv1: expose_guests[0] (web01): ip: address %s is %s; no forward can use it' % (address, reason),
        'app01: expose_guest_ip: address %s is %s; no forward can use it' % (address, reason)]


def _twice(name, *sources):
    return ('guest %s is declared %d times, in %s: a domain has one declaration (one address, with all its ports); '
            'keep one and move the ports there' % (name, len(sources), ' and in '.join(sources)))


@pytest.mark.parametrize('variables, others, expected', [
    # the issue: web01 on the hypervisor (.10, 8080) and by a guest host (.11, 9090)
    ({'expose_guest_name': 'web01', 'expose_guest_ip': '192.168.122.11', 'expose_ports': [{'host': 9090}]}, {},
     [_twice('web01', "hv1's expose_guests", 'guest host app01')]),
    # the issue: a guest host that declares no port but would move web01's address to .99
    ({'expose_guest_name': 'web01', 'expose_guest_ip': '192.168.122.99', 'expose_ports': []}, {},
     [_twice('web01', "hv1's expose_guests", 'guest host app01')]),
    ({'expose_ports': [{'host': 9090}]}, {'web01': {'expose_hypervisor': 'hv1', 'expose_ports': []}},
     [_twice('web01', "hv1's expose_guests", 'guest host web01')]),          # a guest host named like the domain
    ({'expose_guest_name': 'db01', 'expose_ports': [{'host': 9090}]},
     {'db02': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'db01', 'expose_ports': [{'host': 9091}]}},
     [_twice('db01', 'guest host app01', 'guest host db02')]),
    ({'expose_guest_name': 'db01', 'expose_ports': []},
     {'db02': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'db01', 'expose_ports': []},
      'db03': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'db01', 'expose_ports': []}},
     [_twice('db01', 'guest host app01', 'guest host db02', 'guest host db03')]),
    ({'expose_guest_name': 'web02', 'expose_ports': [{'host': 9090}]},
     {'web01': {'expose_hypervisor': 'hv2', 'expose_ports': []}}, []),      # another hypervisor's web01: fine
])
def test_a_domain_declared_twice_is_refused_naming_both(variables, others, expected):
    hostvars = _guest_host(**variables)
    hostvars.update(others)
    # each guest host may declare the domain it names (expose_guest_domains): the duplicate alone is refused
    hostvars['hv1']['expose_guest_domains'] = {host: hostvars[host]['expose_guest_name'] for host in hostvars
                                               if hostvars[host].get('expose_guest_name')}
    assert _problems(hostvars) == expected


def test_a_domain_listed_twice_in_expose_guests_is_refused():
    guests = [{'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'host': 8080}]},
              {'name': 'web01', 'ip': '192.168.122.11', 'ports': [{'host': 9090}]}]
    assert _problems({'hv1': {'expose_guests': guests}}) == [_twice('web01', "hv1's expose_guests", "hv1's expose_guests")]


@pytest.mark.parametrize('variables, expected', [
    ({'expose_guest_name': 0}, "app01: expose_guest_name 0 must be a libvirt domain name"),
    ({'expose_guest_name': False}, "app01: expose_guest_name False must be a libvirt domain name"),
    ({'expose_guest_name': ['web01']}, "app01: expose_guest_name ['web01'] must be a libvirt domain name"),
    ({'expose_ports': 0}, 'app01: expose_ports must be a list of port declarations like [{host: 8080, guest: 80}], not 0'),
    ({'expose_ports': {}}, 'app01: expose_ports must be a list of port declarations like [{host: 8080, guest: 80}], not {}'),
    ({'expose_ports': False}, 'app01: expose_ports must be a list of port declarations like [{host: 8080, guest: 80}], '
                              'not False'),
    ({'expose_ports': ''}, "app01: expose_ports must be a list of port declarations like [{host: 8080, guest: 80}], not ''"),
])
def test_guest_side_variables_of_the_wrong_type_are_refused_not_read_as_unset(variables, expected):
    hostvars = _guest_host(**dict({'expose_ports': [{'host': 8443}]}, **variables))
    problems = _problems(hostvars)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize('variables, name', [({}, 'app01'), ({'expose_guest_name': ''}, 'app01'),
                                             ({'expose_guest_name': None}, 'app01'), ({'expose_ports': None}, 'app01'),
                                             ({'expose_guest_name': 'app01'}, 'app01')])
def test_an_unset_guest_name_is_the_inventory_name(variables, name):
    hostvars = _guest_host(**dict({'expose_ports': [{'host': 8443}]}, **variables))
    assert [g['name'] for g in F.declared_exposures(hostvars, 'hv1')] == ['web01', name]


# ---------------------------------------------------------------- review of issue 19: a guest host's own domain

def _not_own(host, name, own, hypervisor='hv1'):
    return ("%s: expose_guest_name '%s' is not this guest host's own domain (%s): a guest host declares only its own "
            "domain (to let it declare %s, set expose_guest_domains: {%s: %s} on hypervisor %s)"
            % (host, name, own, name, host, name, hypervisor))


@pytest.mark.parametrize('variables, domains, problems, names', [
    # the review's example: app01 exposes db01, a domain the hypervisor side never gave it
    ({'expose_guest_name': 'db01', 'expose_ports': [{'host': 3306}]}, None, [_not_own('app01', 'db01', 'app01')], None),
    # ... with an address too (the forward and the pin would go to db01's address)
    ({'expose_guest_name': 'db01', 'expose_guest_ip': '192.168.122.30', 'expose_ports': [{'host': 3306}]}, {},
     [_not_own('app01', 'db01', 'app01')], None),
    # its own inventory name, written out or not: always fine
    ({'expose_guest_name': 'app01', 'expose_ports': [{'host': 8443}]}, None, [], ['web01', 'app01']),
    ({'expose_ports': [{'host': 8443}]}, None, [], ['web01', 'app01']),
    # the domain the hypervisor side maps it to: fine, and the default when expose_guest_name is unset
    ({'expose_guest_name': 'app01-vm', 'expose_ports': [{'host': 8443}]}, {'app01': 'app01-vm'}, [], ['web01', 'app01-vm']),
    ({'expose_ports': [{'host': 8443}]}, {'app01': 'app01-vm'}, [], ['web01', 'app01-vm']),
    ({'expose_guest_name': 'app01', 'expose_ports': [{'host': 8443}]}, {'app01': 'app01-vm'}, [], ['web01', 'app01']),
    # mapped to one domain, asking for another
    ({'expose_guest_name': 'db01', 'expose_ports': [{'host': 3306}]}, {'app01': 'app01-vm'},
     [_not_own('app01', 'db01', 'app01 or app01-vm')], None),
    # another guest host's mapping gives app01 nothing
    ({'expose_guest_name': 'db01', 'expose_ports': [{'host': 3306}]}, {'db-team': 'db01'},
     [_not_own('app01', 'db01', 'app01')], None),
    # the admin's web01, asked for by a guest host: refused as not its own, and as declared twice
    ({'expose_guest_name': 'web01', 'expose_guest_ip': '192.168.122.99', 'expose_ports': []}, None,
     [_not_own('app01', 'web01', 'app01'), _twice('web01', "hv1's expose_guests", 'guest host app01')], None),
])
def test_a_guest_host_declares_only_its_own_domain_or_the_one_the_hypervisor_maps_it_to(variables, domains, problems, names):
    hostvars = _guest_host(**variables)
    if domains is not None:
        hostvars['hv1']['expose_guest_domains'] = domains
    assert _problems(hostvars) == problems
    if names is not None:
        assert [g['name'] for g in F.declared_exposures(hostvars, 'hv1')] == names


def test_the_roles_guest_domains_win_over_hostvars_and_guest_exposures_checks_them_too():
    hostvars = _guest_host(expose_guest_name='db01', expose_ports=[{'host': 3306}])
    hostvars['hv1']['expose_guest_domains'] = {'app01': 'db01'}
    assert _problems(hostvars) == []
    assert _problems(hostvars, guest_domains={}) == [_not_own('app01', 'db01', 'app01')]
    with pytest.raises(AnsibleFilterError) as exc:
        F.guest_exposures(hostvars, 'hv1')
    assert str(exc.value).split('\n- ')[1:] == [_not_own('app01', 'db01', 'app01')]
    assert [g['name'] for g in F.guest_exposures(hostvars, 'hv1', guest_domains={'app01': 'db01'})] == ['db01']


@pytest.mark.parametrize('domains, expected', [
    (['app01-vm'], "hv1: expose_guest_domains must map a guest host (inventory name) to the libvirt domain it "
                   "declares, like {app01: app01-vm}, not ['app01-vm']"),
    ('app01-vm', "hv1: expose_guest_domains must map a guest host (inventory name) to the libvirt domain it declares"),
    ({'app01': 5}, 'hv1: expose_guest_domains: app01: 5 must be a libvirt domain name'),
    ({'app01': 'db 01'}, "hv1: expose_guest_domains: app01: 'db 01' must be a libvirt domain name"),
    ({5: 'db01'}, 'hv1: expose_guest_domains: 5 is not an inventory host name'),
])
def test_a_wrong_expose_guest_domains_is_refused(domains, expected):
    hostvars = _guest_host(expose_ports=[{'host': 8443}])
    hostvars['hv1']['expose_guest_domains'] = domains
    problems = _problems(hostvars)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize('exposure, addresses, resolved, unresolved', [
    # a guest side's address the module refused: unresolved with its reason, although the exposure has an ip
    ({'name': 'app01', 'ip': '192.168.122.20', 'declared_by': 'app01', 'ports': []},
     {'guests': [], 'unresolved': [{'name': 'app01', 'reason': 'the guest side declares 192.168.122.20, but ...'}]},
     [], [{'name': 'app01', 'reason': 'the guest side declares 192.168.122.20, but ...'}]),
    # ... and one it accepted
    ({'name': 'app01', 'ip': '192.168.122.77', 'declared_by': 'app01', 'ports': []},
     {'guests': [{'name': 'app01', 'ip': '192.168.122.77', 'source': 'claimed'}], 'unresolved': []},
     ['192.168.122.77'], []),
    # the hypervisor side's address, which the module does not refuse
    ({'name': 'web01', 'ip': '192.168.122.10', 'declared_by': 'hv1', 'ports': []},
     {'guests': [{'name': 'web01', 'ip': '192.168.122.10', 'source': 'declared'}], 'unresolved': []},
     ['192.168.122.10'], []),
])
def test_resolve_exposures_leaves_a_refused_address_unresolved(exposure, addresses, resolved, unresolved):
    result = F.resolve_exposures([exposure], addresses)
    assert [e['ip'] for e in result['exposures']] == resolved and result['unresolved'] == unresolved
