# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.forwards' ``backend`` option with real packets, in throwaway namespaces (root; see netlab.py).

The hypervisor starts with libvirt's iptables rules (``auto`` picks iptables, ``nftables`` is refused);
then libvirt moves to its nftables backend, as after ``firewall_backend = "nftables"`` and a restart of its
networks (its iptables rules go, its nftables tables come): ``auto`` moves every forward into our nftables
table and leaves nothing of the iptables backend (rules, chains, saved files); kvmnet-nat-restore brings
the table and the accept rule back after a reboot and after libvirt rebuilt its table; ``backend:
iptables`` moves them back; ``state: absent`` leaves libvirt's tables exactly as libvirt wrote them.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from ansible_collections.kvmnet.nat.tests.support import nftsets

from netlab import CLIENT_IP, PUBLIC_IP, Lab

FORWARDS = [
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80},
    {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': '10000-10001', 'guest_port': '20000-20001'},
    {'guest': 'dns01', 'guest_ip': '192.168.122.11', 'proto': 'udp', 'host_port': 5353, 'guest_port': 53},
    {'guest': 'web01', 'guest_ip': '2001:db8:122::10', 'host_port': 8080, 'guest_port': 80,
     'public_ip': '2001:db8::10'},
]
# libvirt's iptables rules going away, as libvirt removes them when it moves to nftables (ours stay)
LIBVIRT_GONE = {4: """*filter
-D INPUT -j LIBVIRT_INP
-D FORWARD -j LIBVIRT_FWX
-D FORWARD -j LIBVIRT_FWI
-D FORWARD -j LIBVIRT_FWO
-D OUTPUT -j LIBVIRT_OUT
-F LIBVIRT_FWI
-F LIBVIRT_FWO
-F LIBVIRT_FWX
-F LIBVIRT_INP
-F LIBVIRT_OUT
-X LIBVIRT_FWI
-X LIBVIRT_FWO
-X LIBVIRT_FWX
-X LIBVIRT_INP
-X LIBVIRT_OUT
COMMIT
*nat
-D POSTROUTING -j LIBVIRT_PRT
-F LIBVIRT_PRT
-X LIBVIRT_PRT
COMMIT
""", 6: """*filter
-D FORWARD -j LIBVIRT_FWX
-D FORWARD -j LIBVIRT_FWI
-D FORWARD -j LIBVIRT_FWO
-F LIBVIRT_FWI
-F LIBVIRT_FWO
-F LIBVIRT_FWX
-X LIBVIRT_FWI
-X LIBVIRT_FWO
-X LIBVIRT_FWX
COMMIT
"""}
REACHED = [('tcp', PUBLIC_IP, 8080, 'web01 %s 80' % CLIENT_IP), ('tcp', PUBLIC_IP, 10001, 'web01 %s 20001' % CLIENT_IP),
           ('udp', PUBLIC_IP, 5353, 'dns01 %s 53' % CLIENT_IP), ('tcp', '2001:db8::10', 8080, 'web01 2001:db8::50 80')]


@pytest.fixture(scope='module')
def lab():
    lab = Lab('nft')
    try:
        lab.up()
        lab.base = os.path.join(lab.tmp, 'kvmnet-nat')
        yield lab
    finally:
        lab.down()


def run(lab, backend='auto', check=False, state='present'):
    return lab.module({'forwards': FORWARDS if state == 'present' else [], 'public_ip': PUBLIC_IP,
                       'public_ip6': '2001:db8::10', 'persist_path': lab.base, 'backend': backend, 'state': state,
                       'check_listeners': False}, check=check)


def ours_in_iptables(lab):
    return [line for family in (4, 6) for line in lab.save(family).splitlines() if 'KVMNAT' in line]


def libvirt_table(lab):
    """libvirt's nftables tables without counters, our accept rule left out."""
    text = lab.x('hv', 'nft', '-s', 'list', 'ruleset').stdout
    tables, keep = [], False
    for line in text.splitlines():
        if line.startswith('table '):
            keep = line.split()[2] == 'libvirt_network'
        if keep and 'kvmnet.nat: accept' not in line:
            tables.append(line)
    return tables


def saved(lab):
    return sorted(name[len('kvmnet-nat.'):] for name in os.listdir(lab.tmp)
                  if name.startswith('kvmnet-nat.') and name != 'kvmnet-nat.lock')


def reaches(lab):
    lab.settle()
    return [lab.probe(proto, address, port, timeout=3) == answer for proto, address, port, answer in REACHED]


def test_auto_follows_libvirts_iptables_and_nftables_is_refused(lab):
    result = run(lab)
    assert result.get('failed') is not True, result.get('msg')
    assert result['backend']['name'] == 'iptables' and result['backend']['libvirt'] == 'iptables'
    assert 'LIBVIRT_' in result['backend']['reason']
    assert reaches(lab) == [True] * len(REACHED)
    assert saved(lab) == ['v4', 'v6']
    before = [lab.save(4), lab.save(6)]
    refused = run(lab, backend='nftables')
    assert refused.get('failed') is True and 'backend nftables cannot work here' in refused['msg']
    assert 'nothing was changed' in refused['msg']
    assert [lab.save(4), lab.save(6)] == before and saved(lab) == ['v4', 'v6']


def test_libvirt_moving_to_nftables_moves_every_forward_and_leaves_nothing_of_iptables(lab):
    for family in (4, 6):
        lab.x('hv', lab.ipt(family) + '-restore', '--noflush', data=LIBVIRT_GONE[family])
    lab.x('hv', 'nft', '-f', '-', data=nftsets.LIBVIRT)
    lab.libvirt_baseline = libvirt_table(lab)
    assert reaches(lab) == [False] * len(REACHED)      # our iptables accept cannot pass libvirt's nftables reject
    checked = run(lab, check=True)
    assert checked['changed'] is True and checked['backend']['name'] == 'nftables'
    assert any(reason.startswith('inet ') for reason in checked['reasons'])
    assert any(reason.startswith('ipv4 ') for reason in checked['reasons'])      # the old rules go, said so
    assert ours_in_iptables(lab) and saved(lab) == ['v4', 'v6']                  # check mode changed nothing
    result = run(lab)
    assert result['changed'] is True and result['backend']['name'] == 'nftables', result.get('msg')
    assert "table ip libvirt_network is loaded" in result['backend']['reason']
    assert reaches(lab) == [True] * len(REACHED)
    assert ours_in_iptables(lab) == [] and saved(lab) == ['nft']
    assert libvirt_table(lab) == lab.libvirt_baseline
    assert run(lab)['changed'] is False


def test_the_restore_brings_back_the_table_and_the_accept_rule(lab):
    restore = lab.restore_script(__expose_rules_base=lab.base, __expose_lock_path=lab.lock_path)
    lab.x('hv', 'nft', 'delete', 'table', 'inet', 'kvmnet_nat')             # a reboot: only libvirt's tables
    for family in ('ip', 'ip6'):                                          # libvirt rebuilt its table
        lab.x('hv', 'nft', 'delete', 'table', family, 'libvirt_network')
    lab.x('hv', 'nft', '-f', '-', data=nftsets.LIBVIRT)
    assert reaches(lab) == [False] * len(REACHED)
    proc = subprocess.run(['ip', 'netns', 'exec', lab.ns['hv'], restore, 'start'], capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert reaches(lab) == [True] * len(REACHED)
    first = [lab.x('hv', 'nft', 'list', 'chain', family, 'libvirt_network', 'forward').stdout.splitlines()[3]
             for family in ('ip', 'ip6')]
    assert all('kvmnet.nat: accept' in line for line in first), first
    assert run(lab)['changed'] is False


def test_the_hook_puts_the_accept_rule_back_when_libvirt_builds_its_table_after_the_hook(lab):
    """libvirt 11.3 starting its daemon runs the network hooks ~0.2 s before it re-creates its nftables tables:
    the hook's own run finds no table; its one detached later run (as soon as libvirt's table is there, here
    at most 3 s) puts the rule back, and a burst of events starts only one such run."""
    restore = lab.restore_script(__expose_rules_base=lab.base, __expose_lock_path=lab.lock_path)
    hook = lab.script('libvirt-network-hook.sh.j2', __expose_restore_script=restore, __expose_rules_base=lab.base,
                      __expose_lock_path=lab.lock_path, __expose_hook_later=3)
    for family in ('ip', 'ip6'):                                          # libvirtd restarting: no table yet
        lab.x('hv', 'nft', 'delete', 'table', family, 'libvirt_network')
    for event in ('started', 'port-created', 'port-created'):
        proc = subprocess.run(['ip', 'netns', 'exec', lab.ns['hv'], hook, 'default', event, 'begin'],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
    assert os.path.isdir(lab.lock_path + '.later')                        # one run pending
    lab.x('hv', 'nft', '-f', '-', data=nftsets.LIBVIRT)                   # the tables come, after the hooks
    first = []
    for _try in range(40):
        time.sleep(0.25)
        first = [lab.x('hv', 'nft', 'list', 'chain', family, 'libvirt_network', 'forward').stdout.splitlines()[3]
                 for family in ('ip', 'ip6')]
        if all('kvmnet.nat: accept' in line for line in first) and not os.path.isdir(lab.lock_path + '.later'):
            break
    assert all('kvmnet.nat: accept' in line for line in first), first
    assert reaches(lab) == [True] * len(REACHED)
    assert run(lab)['changed'] is False


def test_the_hooks_later_run_sees_an_ipv6_only_libvirt_at_once(lab):
    """A libvirt network with IPv6 only has libvirt's ip6 table and no ip one: the hook's later run puts the
    rule into it as soon as it is there, not when its wait runs out (here 8 s)."""
    restore = lab.restore_script(__expose_rules_base=lab.base, __expose_lock_path=lab.lock_path)
    hook = lab.script('libvirt-network-hook.sh.j2', __expose_restore_script=restore, __expose_rules_base=lab.base,
                      __expose_lock_path=lab.lock_path, __expose_hook_later=8)
    ip6_only = nftsets.LIBVIRT[nftsets.LIBVIRT.index('table ip6 libvirt_network'):]
    for family in ('ip', 'ip6'):
        lab.x('hv', 'nft', 'delete', 'table', family, 'libvirt_network')
    try:
        proc = subprocess.run(['ip', 'netns', 'exec', lab.ns['hv'], hook, 'default', 'started', 'begin'],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 0, proc.stderr
        assert os.path.isdir(lab.lock_path + '.later')
        lab.x('hv', 'nft', '-f', '-', data=ip6_only)
        start, first = time.monotonic(), ''
        while time.monotonic() - start < 4 and 'kvmnet.nat: accept' not in first:
            time.sleep(0.25)
            first = lab.x('hv', 'nft', 'list', 'chain', 'ip6', 'libvirt_network', 'forward').stdout.splitlines()[3]
        assert 'kvmnet.nat: accept' in first, first
    finally:
        for _try in range(60):                                            # the later run is over
            if not os.path.isdir(lab.lock_path + '.later'):
                break
            time.sleep(0.25)
        # libvirt's tables as the other tests have them: both, in libvirt's order (ip first)
        lab.x('hv', 'nft', '-f', '-', data='table ip6 libvirt_network\ndelete table ip6 libvirt_network\n' + nftsets.LIBVIRT)
    assert run(lab)['changed'] is True                                    # our accept rules, and no more
    assert run(lab)['changed'] is False


def test_backend_iptables_moves_them_back_and_absent_leaves_libvirts_tables_as_they_were(lab):
    result = run(lab, backend='iptables')
    assert result['changed'] is True and result['backend']['name'] == 'iptables'
    assert "libvirt's network driver uses its nftables firewall backend" in json.dumps(result.get('warnings'))
    assert 'kvmnet_nat' not in lab.x('hv', 'nft', 'list', 'tables').stdout
    assert libvirt_table(lab) == lab.libvirt_baseline
    assert 'kvmnet.nat: accept' not in lab.x('hv', 'nft', 'list', 'ruleset').stdout
    assert ours_in_iptables(lab) and saved(lab) == ['v4', 'v6']
    run(lab)                                                              # auto: back in nftables
    assert saved(lab) == ['nft']
    removed = run(lab, state='absent')
    assert removed['changed'] is True and saved(lab) == []
    assert ours_in_iptables(lab) == [] and 'kvmnet' not in lab.x('hv', 'nft', 'list', 'ruleset').stdout
    assert libvirt_table(lab) == lab.libvirt_baseline
