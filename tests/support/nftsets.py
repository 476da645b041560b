# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the nftables backend's tests share (units, namespace tests, the fixture recorder, the benchmark):
libvirt 11.3's nftables rules for the default network as a script, an admin's own table, the forwards
of the examples (both families, every kind), the recorded ``nft -j list ruleset`` fixtures, and a saved
file's checksum made right again after an edit.
"""

from __future__ import annotations

import hashlib
import json
import os

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.tests.support.rulesets import ISSUE_EXAMPLE, PUB, PUB6

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'unit', 'plugins', 'module_utils', 'nftables', 'fixtures')

# libvirt's tables as its nftables backend builds them for network "default" (virbr0, 192.168.122.0/24
# and 2001:db8:122::/64): forward jumps to guest_cross, guest_input, guest_output; guest_input accepts
# only established/related to the network, then rejects; guest_nat masquerades the network's own traffic.
LIBVIRT = """table ip libvirt_network {
    chain forward {
        type filter hook forward priority filter; policy accept;
        counter jump guest_cross
        counter jump guest_input
        counter jump guest_output
    }
    chain guest_output {
        ip saddr 192.168.122.0/24 iif "virbr0" counter accept
        iif "virbr0" counter reject
    }
    chain guest_input {
        oif "virbr0" ip daddr 192.168.122.0/24 ct state established,related counter accept
        oif "virbr0" counter reject
    }
    chain guest_cross {
        iif "virbr0" oif "virbr0" counter accept
    }
    chain guest_nat {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 192.168.122.0/24 ip daddr 224.0.0.0/24 counter return
        ip saddr 192.168.122.0/24 ip daddr 255.255.255.255 counter return
        meta l4proto tcp ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade to :1024-65535
        meta l4proto udp ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade to :1024-65535
        ip saddr 192.168.122.0/24 ip daddr != 192.168.122.0/24 counter masquerade
    }
}
table ip6 libvirt_network {
    chain forward {
        type filter hook forward priority filter; policy accept;
        counter jump guest_cross
        counter jump guest_input
        counter jump guest_output
    }
    chain guest_output {
        ip6 saddr 2001:db8:122::/64 iif "virbr0" counter accept
        iif "virbr0" counter reject
    }
    chain guest_input {
        oif "virbr0" ip6 daddr 2001:db8:122::/64 ct state established,related counter accept
        oif "virbr0" counter reject
    }
    chain guest_cross {
        iif "virbr0" oif "virbr0" counter accept
    }
}
"""

# an admin's own table: never read as ours, never touched
ADMIN = """table inet filter {
    chain input {
        type filter hook input priority filter; policy accept;
        ip saddr 192.0.2.99 counter drop comment "admin: block a scanner"
    }
}
"""

# an admin's table that drops one guest's traffic on the forward hook (dns01): only its forwards break
ADMIN_DROP_ONE = """table inet guards {
    chain forward {
        type filter hook forward priority filter + 10; policy accept;
        ip daddr 192.168.122.11 udp dport 53 counter drop comment "admin: no dns from outside"
    }
}
"""

# an admin's stock firewall with policy drop on forward (Debian's nftables.conf, hardened): every forward breaks
ADMIN_POLICY_DROP = """table inet filter {
    chain forward {
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "virbr0" oifname "eth0" accept
    }
}
"""

# the same with the accept for kvmnet.nat's mark the doctor names (rules.ACCEPT_MARK)
ADMIN_POLICY_DROP_FIXED = ADMIN_POLICY_DROP.replace(
    '        ct state established,related accept\n',
    '        ct mark & 0x00200000 == 0x00200000 accept\n        ct state established,related accept\n')

EXTRA = [
    # IPv6, hairpin with the guest network
    dict(guest='web01', guest_ip='2001:db8:122::10', host_port=8080, guest_port=80, public_ip=PUB6,
         guest_network='2001:db8:122::/64'),
    # IPv6, a shifted range with sources
    dict(guest='web01', guest_ip='2001:db8:122::10', host_port='9000-9002', guest_port='9100-9102', public_ip=PUB6,
         sources=['2001:db8:5::/48', '2001:db8:6::1/128']),
    # in_interface with a public address; two forwards on one port told apart by interface
    dict(guest='web01', guest_ip='192.168.122.10', host_port='7000-7009', in_interface='eth0', masquerade='always'),
    dict(guest='web02', guest_ip='192.168.122.14', host_port=7005, in_interface='eth1'),
    # a range kept as it is, hairpin
    dict(guest='web03', guest_ip='192.168.122.15', host_port='6002-6003', guest_network='192.168.122.0/24'),
    # a shifted range with overlapping and adjacent sources (collapsed)
    dict(guest='web03', guest_ip='192.168.122.15', host_port='6100-6103', guest_port='6200-6203',
         sources=['198.51.100.7/32', '198.51.100.0/24', '192.0.2.0/25', '192.0.2.128/25']),
    # sctp, masquerade never
    dict(guest='web03', guest_ip='192.168.122.15', proto='sctp', host_port=3868, masquerade='never'),
]

# forwards without a public address: only an inbound interface (exact and wildcard)
IFACE_ONLY = [
    dict(guest='web02', guest_ip='192.168.122.14', host_port=6000, in_interface='eth1'),
    dict(guest='web02', guest_ip='192.168.122.14', proto='udp', host_port=6001, in_interface='vnet+',
         guest_network='192.168.122.0/24'),
    dict(guest='web02', guest_ip='2001:db8:122::14', host_port=6000, in_interface='eth1'),
]


def all_forwards():
    """Every kind of forward, both families, in one validated list."""
    return F.parse_forwards(ISSUE_EXAMPLE + EXTRA, public_ip=PUB) + F.parse_forwards(IFACE_ONLY)


def fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def listing(ruleset, command):
    """What ``nft -j list ...`` prints for ``command`` on a host whose ``nft -j list ruleset`` is ``ruleset``
    (JSON text): ``ruleset``, ``tables``, ``chains``, ``table FAMILY NAME``; None for another command."""
    items = json.loads(ruleset)['nftables']
    words = command.split()
    if words[:3] != ['nft', '-j', 'list']:
        return None
    what = words[3:]

    def keep(item):
        kind, obj = next(iter(item.items()))
        if kind == 'metainfo' or what == ['ruleset']:
            return True
        if what == ['tables']:
            return kind == 'table'
        if what == ['chains']:
            return kind in ('table', 'chain')
        if what[0] == 'table' and len(what) == 3:
            owner = (obj.get('family'), obj.get('name') if kind == 'table' else obj.get('table'))
            return owner == (what[1], what[2])
        raise AssertionError('unexpected command: %s' % command)
    return 0, json.dumps({'nftables': [item for item in items if keep(item)]}), ''


def resum(text):
    """A saved file (kvmnet-nat.nft) with its checksum made right again after an edit: what an editor who
    knows the format would write (the checksum covers the body, below the two header lines)."""
    lines = text.split('\n')
    body = '\n'.join(lines[2:])
    lines[1] = lines[1].rsplit('sha256=', 1)[0] + 'sha256=' + hashlib.sha256(body.encode()).hexdigest()
    return '\n'.join(lines)
