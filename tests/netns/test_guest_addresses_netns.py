# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.guest_addresses on a real bridge (issue 19): an address the guest agent reports is used only
when the guest itself answers for it there.

libvirt is not in the lab: ``virsh`` is a stub on the module's PATH that answers from a table (the
domains web01 and dns01 with their lab MACs, the network on virbr0, an agent answer per test). The
bridge, the neighbour table, ``ip`` and the host's addresses are the lab's own; everything runs in the
lab's hypervisor namespace.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import pytest

from netlab import GUESTS, Lab

NETWORK = """<network><name>default</name><bridge name='virbr0'/>
  <ip address='192.168.122.1' netmask='255.255.255.0'><dhcp><range start='192.168.122.100' end='192.168.122.254'/></dhcp></ip>
</network>"""
LEASES = ' Expiry Time   MAC address   Protocol   IP address   Hostname   Client ID or DUID\n' + '-' * 60 + '\n'
HEADER = ' Name       MAC address          Protocol     Address\n' + '-' * 60 + '\n'
STUB = """#!%s
import json, sys
key = ' '.join(sys.argv[3:])        # without --connect URI
with open(%r) as handle:
    answers = json.load(handle)
for prefix, (rc, out, err) in answers:
    if key.startswith(prefix):
        sys.stdout.write(out)
        sys.stderr.write(err)
        sys.exit(rc)
sys.stderr.write('stub virsh: no answer for %%s\\n' %% key)
sys.exit(1)
"""


def domain(name, mac):
    return ("<domain><name>%s</name><devices><interface type='network'><mac address='%s'/>"
            "<source network='default'/><target dev='vnet-%s'/></interface></devices></domain>" % (name, mac, name))


@pytest.fixture(scope='module')
def lab():
    lab = Lab('nft')
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


@pytest.fixture(scope='module')
def macs(lab):
    """The lab guests' MACs, each once resolved by the hypervisor (ping may be missing on this machine)."""
    found = {}
    for guest, (ip4, _ip6, _tcp, _udp) in GUESTS.items():
        found[guest] = lab.x(guest, 'cat', '/sys/class/net/eth0/address').stdout.strip()
        lab.probe('tcp', ip4, 80, role='hv')
    return found


def run_module(lab, macs, agent_ip, record):
    stub_dir = tempfile.mkdtemp(prefix='virsh-', dir=lab.tmp)
    answers = os.path.join(stub_dir, 'answers.json')
    agent = HEADER + ' vnet-web01  %s    ipv4         %s/24\n' % (macs['web01'], agent_ip)
    with open(answers, 'w') as out:
        json.dump([
            ['net-list --name', [0, 'default\n', '']], ['net-list --all --name', [0, 'default\n', '']],
            ['net-dumpxml default', [0, NETWORK, '']], ['net-dhcp-leases default', [0, LEASES, '']],
            ['list --all --name', [0, 'web01\ndns01\n', '']],
            ['dumpxml web01', [0, domain('web01', macs['web01']), '']],
            ['dumpxml dns01', [0, domain('dns01', macs['dns01']), '']],
            ['domstate web01', [0, 'running\n', '']],
            ['domifaddr web01 --full --source lease', [0, HEADER, '']],
            ['domifaddr web01 --full --source agent', [0, agent, '']],
            ['net-update default add-last ip-dhcp-host', [0, 'Updated network default live state\n', '']],
        ], out)
    stub = os.path.join(stub_dir, 'virsh')
    with open(stub, 'w') as out:
        out.write(STUB % (sys.executable, answers))
    os.chmod(stub, 0o755)
    handle, args = tempfile.mkstemp(prefix='args-', suffix='.json', dir=lab.tmp)
    with os.fdopen(handle, 'w') as out:
        json.dump({'ANSIBLE_MODULE_ARGS': {'names': ['web01'], 'record_path': record,
                                           'address_sources': ['lease', 'agent']}}, out)
    code = 'from ansible_collections.kvmnet.nat.plugins.modules.guest_addresses import main; main()'
    cmd = ['ip', 'netns', 'exec', lab.ns['hv'], 'env', 'PYTHONPATH=' + lab.collections_path,
           'PATH=%s:/usr/sbin:/usr/bin:/sbin:/bin' % stub_dir, sys.executable, '-c', code, args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    return lab.result(proc.returncode, proc.stdout, proc.stderr)


def test_the_agent_reports_a_neighbours_address_answered_by_the_neighbour(lab, macs):
    """The issue's example: web01's agent reports dns01's address; on virbr0 dns01 answers for it."""
    record = os.path.join(lab.tmp, 'pins-neighbour.json')
    result = run_module(lab, macs, GUESTS['dns01'][0], record)
    assert result.get('failed') is None, result
    assert result['guests'] == []
    assert result['unresolved'] == [{'name': 'web01', 'reason': (
        "the guest agent reports 192.168.122.11, but on virbr0 %s (dns01) answers for it, not this guest's %s "
        "(another machine's address, or a forged one); give its ip in the inventory if it is right"
        % (macs['dns01'], macs['web01']))}]
    assert not os.path.exists(record)


def test_the_agent_reports_its_own_address_and_it_is_used_and_pinned(lab, macs):
    record = os.path.join(lab.tmp, 'pins-own.json')
    result = run_module(lab, macs, GUESTS['web01'][0], record)
    assert result.get('failed') is None, result
    assert result['unresolved'] == []
    assert result['guests'] == [{'name': 'web01', 'ip': '192.168.122.10', 'source': 'agent', 'mac': macs['web01'],
                                 'network': 'default', 'pinned': True}]
    with open(record) as handle:
        assert json.load(handle)['pins'] == [{'network': 'default', 'mac': macs['web01'], 'ip': '192.168.122.10',
                                              'guest': 'web01'}]


def test_the_agent_reports_an_address_nobody_answers_for(lab, macs):
    record = os.path.join(lab.tmp, 'pins-nobody.json')
    result = run_module(lab, macs, '192.168.122.12', record)
    assert result.get('failed') is None, result
    assert result['guests'] == [] and len(result['unresolved']) == 1
    assert result['unresolved'][0]['reason'].startswith(
        'the guest agent reports 192.168.122.12, and nothing could be seen answering for it on virbr0 (')
    assert not os.path.exists(record)
