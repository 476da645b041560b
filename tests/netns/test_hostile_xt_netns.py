# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile review of issue 21: an admin's iptables-nft rules (xt matches and targets in nft's JSON) beside
the nftables backend; the client really cannot connect, the doctor must not say ok. Root; lab namespaces."""

from __future__ import annotations

# lab: test_doctor_nft_netns's module-scoped fixture
from test_doctor_nft_netns import doctor, lab, reachable  # noqa: F401  pylint: disable=unused-import


def test_iptables_nft_policy_drop_with_conntrack_established_is_not_ok(lab):  # noqa: F811
    assert reachable(lab)
    lab.x('hv', 'iptables-nft', '-P', 'FORWARD', 'DROP')
    lab.x('hv', 'iptables-nft', '-A', 'FORWARD', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'ACCEPT')
    try:
        assert not reachable(lab)
        _result, forwards = doctor(lab)
        verdicts = {label: item['verdict'] for label, item in forwards.items()}
        assert 'ok' not in verdicts.values(), verdicts
    finally:
        lab.x('hv', 'iptables-nft', '-F', 'FORWARD')
        lab.x('hv', 'iptables-nft', '-P', 'FORWARD', 'ACCEPT')


def test_iptables_nft_reject_of_one_guest_port_is_not_ok(lab):  # noqa: F811
    assert reachable(lab)
    lab.x('hv', 'iptables-nft', '-A', 'FORWARD', '-d', '192.168.122.10', '-p', 'tcp', '--dport', '80', '-j', 'REJECT')
    try:
        assert not reachable(lab)
        _result, forwards = doctor(lab)
        assert forwards['web01 tcp/8080->80']['verdict'] != 'ok', forwards['web01 tcp/8080->80']
    finally:
        lab.x('hv', 'iptables-nft', '-F', 'FORWARD')


def test_a_netdev_ingress_drop_is_not_ok(lab):  # noqa: F811
    assert reachable(lab)
    # for every client: the doctor's client comes from outside the host's own networks, and the lab's client
    # sits in the public network itself, so a drop of its own address is not one the doctor can attribute
    lab.x('hv', 'nft', '-f', '-', data='table netdev edge {\n chain in {\n  type filter hook ingress device "eth0" '
          'priority 0; policy accept;\n  tcp dport 8080 drop\n }\n}\n')
    try:
        assert not reachable(lab)
        _result, forwards = doctor(lab)
        assert forwards['web01 tcp/8080->80']['verdict'] != 'ok', forwards['web01 tcp/8080->80']['verdict']
    finally:
        lab.x('hv', 'nft', 'delete', 'table', 'netdev', 'edge')
