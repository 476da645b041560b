# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.doctor on an nftables host, with real packets (issue 21): libvirt's nftables tables replayed
(nftlab.py), our table loaded by the nftables backend; the doctor's table is green while the client really
connects, and each break (our accept rule gone, an admin's drop for one guest, an admin's ``policy drop``)
is named on the forwards it breaks while the client really cannot connect; mended as the doctor says, the
client connects again. Needs root; everything happens in the lab's namespaces.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F

from nftlab import NftLab

PUBLIC = '203.0.113.10'
WEB = dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80)
SSH = dict(guest='web01', guest_ip='192.168.122.10', host_port=2222, guest_port=22)
DNS = dict(guest='web01', guest_ip='192.168.122.10', proto='udp', host_port=5353, guest_port=53, send='ping',
           expect='^web01 ')
# with sources: an element of the dispatch map keyed on the source as well (srcport4_r), no chain of its own
ALLOWED = dict(guest='web01', guest_ip='192.168.122.10', host_port=8081, guest_port=80, sources=['203.0.113.0/24'])
FORWARDS = [WEB, SSH, DNS, ALLOWED]
LABELS = ['web01 tcp/8080->80', 'web01 tcp/2222->22', 'web01 udp/5353->53', 'web01 tcp/8081->80']
MARK_ACCEPT = 'ct mark and 0x00200000 == 0x00200000 accept'


@pytest.fixture(scope='module')
def lab():
    lab = NftLab()
    lab.tmp = tempfile.mkdtemp(prefix='kvnft-doctor-')
    try:
        lab.up()
        lab.serve('web01', 'web01', ['22', '80'], ['53'])
        backend = lab.backend()
        # as kvmnet.nat.forwards applies them: the guest network found from the connected route (hairpin)
        applied = [dict({k: v for k, v in f.items() if k not in ('send', 'expect')}, guest_network='192.168.122.0/24')
                   for f in FORWARDS]
        desired = backend.desired(F.parse_forwards(applied, public_ip=PUBLIC))
        plan = backend.plan(backend.read(), desired)
        backend.test(plan)
        backend.apply(plan)
        lab.applied = (backend, desired)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(lab.tmp, ignore_errors=True)


def doctor(lab, **params):
    """The module in the hypervisor's namespace, as Ansible runs it, with a PATH that hides virsh and systemctl."""
    args = dict({'public_ip': PUBLIC, 'forwards': FORWARDS, 'timeout': 1.0}, **params)
    args.update(_ansible_check_mode=True)
    path = os.path.join(lab.tmp, 'args.json')
    with open(path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    tools = os.path.join(lab.tmp, 'bin')
    if not os.path.isdir(tools):
        os.mkdir(tools)
        for name in ('ip', 'nft'):
            os.symlink(shutil.which(name), os.path.join(tools, name))
    code = 'from ansible_collections.kvmnet.nat.plugins.modules.doctor import main; main()'
    proc = subprocess.run(['ip', 'netns', 'exec', lab.ns['hv'], 'env', 'PYTHONPATH=' + os.environ.get(
        'ANSIBLE_COLLECTIONS_PATH', os.environ.get('PYTHONPATH', '')), 'PATH=%s:/usr/bin:/bin' % tools,
        sys.executable, '-c', code, path], capture_output=True, text=True, timeout=120, check=False)
    result = json.loads(proc.stdout)
    assert not result.get('failed'), result.get('msg')
    return result, {item['label']: item for item in result['forwards']}


def reachable(lab):
    return lab.probe('client', 'tcp', PUBLIC, 8080).startswith('web01 ')


def test_a_healthy_nftables_host_is_all_green(lab):
    result, forwards = doctor(lab, probe=True)
    assert result['backend']['name'] == 'nftables' and result['backend']['libvirt'] == 'nftables'
    assert sorted(forwards) == sorted(LABELS)
    for label, item in forwards.items():
        assert item['verdict'] == 'ok', (label, item['causes'])
    assert result['broken'] == [] and result['table'][0].split()[0] == 'forward'
    web = forwards['web01 tcp/8080->80']['checks']
    assert 'ip libvirt_network forward: first' in web['jumps']['detail']
    assert web['counters']['ok'] is True and 'the guest answered' in web['counters']['detail']
    allowed = forwards['web01 tcp/8081->80']['checks']
    assert '@srcport4_r' in allowed['rules']['detail'] and 'the guest answered' in allowed['counters']['detail']
    words = [detail for item in result['forwards'] for check in item['checks'].values()
             for detail in [check['detail']] if 'iptables' in detail.replace('bridge-nf-call-iptables', '')]
    assert words == [], words
    assert reachable(lab)


def test_without_our_accept_rule_libvirts_reject_is_named_and_mended(lab):
    backend, desired = lab.applied
    handle = [r.handle for r in backend.read().libvirt['ip'] if r.ours][0]
    lab.x('hv', 'nft', 'delete', 'rule', 'ip', 'libvirt_network', 'forward', 'handle', str(handle))
    try:
        assert not reachable(lab)
        result, forwards = doctor(lab)
        assert sorted(result['broken']) == sorted(LABELS)
        web = forwards['web01 tcp/8080->80']
        assert web['failed'] == 'jumps' and 'Our hook rule in ip libvirt_network forward is missing' in web['cause']
        rules = [c for c in web['causes'] if c['check'] == 'rules'][0]
        assert 'chain ip libvirt_network guest_input rule 2 (oif "virbr0" counter reject) rejects' in rules['cause']
    finally:
        plan = backend.plan(backend.read(), desired)
        backend.apply(plan)
    assert reachable(lab) and doctor(lab)[0]['broken'] == []


def test_an_admins_drop_for_one_forward_is_named_on_that_forward_only(lab):
    lab.x('hv', 'nft', '-f', '-', data='table inet guards {\n chain forward {\n'
          '  type filter hook forward priority filter + 10; policy accept;\n'
          '  ip daddr 192.168.122.10 tcp dport 22 counter drop\n }\n}\n')
    try:
        assert lab.probe('client', 'tcp', PUBLIC, 2222) in ('REFUSED', 'TIMEOUT') and reachable(lab)
        result, forwards = doctor(lab)
        assert result['broken'] == ['web01 tcp/2222->22']
        ssh = forwards['web01 tcp/2222->22']
        assert ssh['failed'] == 'rules' and ssh['cause'].startswith('chain inet guards forward rule 1 (ip daddr ')
        assert 'nft insert rule inet guards forward %s' % MARK_ACCEPT in ssh['fix']
    finally:
        lab.x('hv', 'nft', 'delete', 'table', 'inet', 'guards')


def test_an_admins_policy_drop_is_named_with_the_rule_that_mends_it(lab):
    lab.x('hv', 'nft', '-f', '-', data='table inet filter {\n chain forward {\n'
          '  type filter hook forward priority filter; policy drop;\n  ct state established,related accept\n }\n}\n')
    try:
        assert not reachable(lab)
        result, forwards = doctor(lab)
        assert sorted(result['broken']) == sorted(LABELS)
        web = forwards['web01 tcp/8080->80']
        assert web['cause'] == 'chain inet filter forward (policy drop) drops tcp/8080 to web01 192.168.122.10.'
        fix = 'nft insert rule inet filter forward %s' % MARK_ACCEPT
        assert fix in web['fix']
        lab.x('hv', *fix.split())          # what the doctor says, word for word
        assert reachable(lab)
        assert doctor(lab)[0]['broken'] == []
    finally:
        lab.x('hv', 'nft', 'delete', 'table', 'inet', 'filter')
