# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The playbooks against a namespace hypervisor (issue 10).

kvmnet.nat.verify, run from the lab's client, reads the same declarations as the role and must report
each row truthfully. kvmnet.nat.expose must stop, before anything changes, when no hypervisor matches
or the inventory is wrong. The hypervisor is reached with connection local inside its namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from netlab import CLIENT_IP, CLIENT_IP_2, PUBLIC_IP, PUBLIC_IP6, Lab


@pytest.fixture(scope='module')
def lab():
    """One lab: the verify playbook does not depend on the iptables flavour."""
    lab = Lab('nft')
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


GUESTS = [
    {'name': 'web01', 'ip': '192.168.122.10', 'ports': [
        {'host': 2222, 'guest': 22, 'sources': [CLIENT_IP + '/32']},      # the client is inside: probed
        {'host': 2223, 'guest': 22, 'sources': [CLIENT_IP_2 + '/32']},    # the client is outside: restricted
        {'host': '10000:10009', 'guest': '20000-20009'},
    ]},
    {'name': 'web01v6', 'ip': '2001:db8:122::10', 'ports': [{'host': 8080, 'guest': 80}]},
]


def playbook(lab, role, inventory, name, *extra):
    """ansible-playbook NAME in the namespace of ``role``, with this lab's collection."""
    command = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=lab.collections_path, ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0')
    return subprocess.run(['ip', 'netns', 'exec', lab.ns[role], command, '-i', str(inventory), name, *extra],
                          capture_output=True, text=True, env=env, timeout=300, check=False)


def local(**variables):
    return dict(ansible_connection='local', ansible_python_interpreter=sys.executable, **variables)


def test_verify_reports_allow_lists_ipv6_and_ranges_truthfully(lab, tmp_path):
    forwards = [{'guest': 'web01', 'guest_ip': g['ip'], 'host_port': p['host'], 'guest_port': p['guest'],
                 'sources': p.get('sources', [])} for g in GUESTS for p in g['ports']]
    result = lab.module({'public_ip': PUBLIC_IP, 'public_ip6': PUBLIC_IP6, 'forwards': forwards})
    assert not result.get('failed'), result.get('msg')
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'hypervisors': {'hosts': {'hv1': local(
        expose_public_ip=PUBLIC_IP, expose_public_ip6=PUBLIC_IP6, expose_guests=GUESTS)}},
        'all': {'hosts': {'localhost': local()}}}))
    report = tmp_path / 'report.json'
    proc = playbook(lab, 'client', inventory, 'kvmnet.nat.verify', '-e', 'verify_report=%s' % report,
                    '-e', 'verify_retry_for=3')
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    rows = {(r['public_ip'], r['port']): r for r in json.loads(report.read_text())}
    assert sorted(rows) == [(PUBLIC_IP6, 8080), (PUBLIC_IP, 2222), (PUBLIC_IP, 2223), (PUBLIC_IP, 10000),
                            (PUBLIC_IP, 10009)]
    inside = rows[(PUBLIC_IP, 2222)]
    assert (inside['reachable'], inside['restricted'], inside['vantage']) == (True, False, CLIENT_IP)
    assert inside['answer'] == 'web01 %s 22' % CLIENT_IP
    outside = rows[(PUBLIC_IP, 2223)]
    assert (outside['reachable'], outside['restricted'], outside['attempts']) == (None, True, 0)
    assert 'not probed from here' in outside['error']
    assert rows[(PUBLIC_IP, 10009)]['answer'] == 'web01 %s 20009' % CLIENT_IP
    assert (rows[(PUBLIC_IP6, 8080)]['family'], rows[(PUBLIC_IP6, 8080)]['answer']) == (6, 'web01 2001:db8::50 80')
    assert 'restricted' in proc.stdout and '[2001:db8::10]:8080' in proc.stdout
    lab.module({'state': 'absent'})


@pytest.mark.parametrize('name', ['kvmnet.nat.expose', 'kvmnet.nat.verify'])
def test_a_play_that_matches_no_hypervisor_fails_saying_what_it_looked_for(lab, tmp_path, name):
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'guests': {'hosts': {'app01': {'expose_hypervisor': 'hv1'}}}}))
    proc = playbook(lab, 'client', inventory, name)
    assert proc.returncode != 0
    assert 'No hypervisor matches "hypervisors" in this inventory' in proc.stdout + proc.stderr, proc.stdout[-2000:]
    proc = playbook(lab, 'client', inventory, name, '-e', 'target=rack9')
    assert 'No hypervisor matches "rack9"' in proc.stdout + proc.stderr


@pytest.mark.parametrize('hostvars, expected', [
    ({'hv1': {'expose_guests': [{'name': 'web01', 'ip': '192.168.122.10',
                                 'ports': [{'host': 5353, 'guest': 53, 'protocol': 'udp'}]}]}},
     "hv1: expose_guests[0] (web01) ports[0]: unknown key 'protocol' (did you mean 'proto'?)"),
    ({'app01': {'expose_hypervisor': 'hv1',
                'expose_ports': [{'host': 5353, 'guest': 53, 'protocol': 'udp', 'source': ['198.51.100.0/24']}]}},
     "app01: expose_ports[0]: unknown key 'source' (did you mean 'sources'?)"),
    ({'app01': {'expose_hypervisor': 'hv9', 'expose_ports': [{'host': 8443}]}},
     'app01 names expose_hypervisor "hv9", which is no hypervisor of this play (hv1)'),
    # issue 19: a guest host takes a neighbour's address, or the host's own :80
    ({'app01': {'expose_hypervisor': 'hv1', 'expose_ports': [{'host': 8081, 'guest': 80, 'public_ip': '203.0.113.99'}]}},
     'app01: expose_ports[0]: public_ip is chosen by the hypervisor side, not by a guest host (to let guest hosts '
     'choose it, set expose_guest_side_may_set: [public_ip] on hypervisor hv1)'),
    ({'app01': {'expose_hypervisor': 'hv1', 'expose_ports': [{'host': 80, 'allow_in_use': True}]}},
     'app01: expose_ports[0]: allow_in_use is chosen by the hypervisor side, not by a guest host'),
    # issue 19: one domain, two declarations
    ({'hv1': {'expose_guests': [{'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'host': 8080}]}]},
      'app01': {'expose_hypervisor': 'hv1', 'expose_guest_name': 'web01', 'expose_guest_ip': '192.168.122.99',
                'expose_ports': []}},
     "guest web01 is declared 2 times, in hv1's expose_guests and in guest host app01"),
    ({'hv1': {'expose_guest_side_may_set': ['public_ip']},
      'app01': {'expose_hypervisor': 'hv1', 'expose_ports': [{'host': 6379, 'public_ip': '127.0.0.1'}]}},
     'app01: expose_ports[0]: public_ip: address 127.0.0.1 is a loopback address; no forward can use it'),
])
def test_the_role_stops_on_a_bad_inventory_before_anything_changes(lab, tmp_path, hostvars, expected):
    before = {4: lab.save(4), 6: lab.save(6)}
    hosts = {'hv1': local(expose_public_ip=PUBLIC_IP, **hostvars.get('hv1', {}))}
    guests = {name: variables for name, variables in hostvars.items() if name != 'hv1'}
    inventory = tmp_path / 'inventory.json'
    inventory.write_text(json.dumps({'hypervisors': {'hosts': hosts}, 'guests': {'hosts': guests},
                                     'all': {'hosts': {'localhost': local()}}}))
    # --check and no packages: even a validation that wrongly passed could not change this machine
    proc = playbook(lab, 'hv', inventory, 'kvmnet.nat.expose', '--check', '-e', 'expose_install_packages=false')
    output = ' '.join((proc.stdout + proc.stderr).split())
    assert proc.returncode != 0 and expected in output, output[-3000:]
    assert 'nothing was changed' in output.lower() or 'Nothing was changed' in output
    assert {4: lab.save(4), 6: lab.save(6)} == before


def test_the_role_names_every_refusal_of_the_host_at_once(lab, tmp_path):
    """No default route (so no public address) and libvirt's nftables table with its reject while the
    iptables backend is asked for: one failure that names both, and the ruleset as it was."""
    lab.x('hv', 'nft', '-f', '-', data='table ip libvirt_network {\n chain guest_input {\n'
          '  oifname "virbr0" counter reject\n }\n}\n')
    try:
        before = {4: lab.save(4), 6: lab.save(6)}
        hosts = {'hv1': local(expose_guests=[{'name': 'web01', 'ip': '192.168.122.10',
                                              'ports': [{'host': 8080, 'guest': 80}]}])}
        inventory = tmp_path / 'inventory.json'
        inventory.write_text(json.dumps({'hypervisors': {'hosts': hosts}, 'all': {'hosts': {'localhost': local()}}}))
        proc = playbook(lab, 'hv', inventory, 'kvmnet.nat.expose', '--check', '-e', 'expose_install_packages=false',
                        '-e', 'expose_backend=iptables')
        output = ' '.join((proc.stdout + proc.stderr).split())
        assert proc.returncode != 0, output[-3000:]
        assert 'hv1: nothing was changed. (1) No public address to expose guests on.' in output, output[-3000:]
        assert '(2) libvirt uses its nftables firewall backend here' in output, output[-3000:]
        assert {4: lab.save(4), 6: lab.save(6)} == before
    finally:
        lab.x('hv', 'nft', 'delete', 'table', 'ip', 'libvirt_network')


@pytest.mark.parametrize('may_set, address, expected', [
    (['public_ip'], '127.0.0.1', 'app01: expose_ports[0]: public_ip: address 127.0.0.1 is a loopback address; '
                                 'no forward can use it'),
    (['public_ip'], '0.0.0.0', 'app01: expose_ports[0]: public_ip: address 0.0.0.0 is the unspecified address'),
    (['public_ip'], '::1', 'app01: expose_ports[0]: public_ip: address ::1 is a loopback address'),
    ([], '203.0.113.10', 'app01: expose_ports[0]: public_ip is chosen by the hypervisor side, not by a guest host'),
    (['public_ip'], '169.254.169.254', 'app01: expose_ports[0]: public_ip: address 169.254.169.254 is a link-local'),
])
def test_verify_never_connects_to_an_address_the_role_would_refuse(lab, tmp_path, may_set, address, expected):
    """The issue: a guest host's {host: 6379, public_ip: 127.0.0.1, send: FLUSHALL} made verify send it to a
    listener on the controller's own loopback. The play stops at the declarations; nothing is probed."""
    listener = lab.serve('client', 'client', ['--tcp', '6379'])
    lab.ready(listener)
    try:
        inventory = tmp_path / 'inventory.json'
        inventory.write_text(json.dumps({
            'hypervisors': {'hosts': {'hv1': local(expose_public_ip=PUBLIC_IP, expose_guest_side_may_set=may_set)}},
            'guests': {'hosts': {'app01': {'expose_hypervisor': 'hv1', 'expose_ports': [
                {'host': 6379, 'public_ip': address, 'send': 'FLUSHALL\r\n'}]}}},
            'all': {'hosts': {'localhost': local()}}}))
        proc = playbook(lab, 'client', inventory, 'kvmnet.nat.verify', '-e', 'verify_retry_for=0')
        output = ' '.join((proc.stdout + proc.stderr).split())
        assert proc.returncode != 0 and expected in output, output[-3000:]
        assert 'Connect to each public address and port' not in output
    finally:
        listener.terminate()
        listener.wait(timeout=5)


@pytest.mark.parametrize('params, refused', [
    ({'public_ip': '203.0.113.99'}, 'public_ip 203.0.113.99 is not an address of this host'),
    ({'public_ip': '203.0.113.99', 'vip_addresses': ['198.51.100.99']}, 'public_ip 203.0.113.99 is not an address'),
    ({'public_ip': '203.0.113.99', 'vip_addresses': ['203.0.113.99']}, None),             # a VIP not (yet) here
    ({'public_ip': PUBLIC_IP}, None),
    ({'public_ip': PUBLIC_IP, 'forwards_public_ip': '198.51.100.7'}, 'public_ip 198.51.100.7 is not an address'),
])
def test_the_module_refuses_a_public_address_that_is_not_the_hosts_unless_a_vip(lab, params, refused):
    before = {4: lab.save(4), 6: lab.save(6)}
    params = dict(params)
    forward = {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8081, 'guest_port': 80}
    if 'forwards_public_ip' in params:
        forward['public_ip'] = params.pop('forwards_public_ip')
    result = lab.module(dict(params, forwards=[forward]))
    try:
        if refused:
            assert result.get('failed') is True and refused in result['msg'], result
            assert {4: lab.save(4), 6: lab.save(6)} == before
        else:
            assert not result.get('failed'), result.get('msg')
            assert result['changed'] is True
    finally:
        lab.module({'state': 'absent'})
