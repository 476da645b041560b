# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Forwards and rulesets the unit tests of the engine share (tests/unit/plugins/module_utils and its
iptables/): the public addresses, a forward with defaults, the issue's example, the recorded
iptables-save fixture, and a persisted file read back as the live tables it builds.
"""

from __future__ import annotations

import os

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S

FIXTURES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                        'unit', 'plugins', 'module_utils', 'fixtures')
PUB = '203.0.113.10'
PUB6 = '2001:db8::10'


def fixture(name):
    """The text of a recorded file in tests/unit/plugins/module_utils/fixtures."""
    with open(os.path.join(FIXTURES, name)) as handle:
        return handle.read()


def fwd(**kw):
    """A forward of web01 (tcp 8080 to 80) with ``kw`` changed."""
    base = dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80)
    base.update(kw)
    return base


ISSUE_EXAMPLE = [
    dict(guest='web01', guest_ip='192.168.122.10', proto='tcp', host_port=8080, guest_port=80,
         guest_network='192.168.122.0/24'),
    dict(guest='web01', guest_ip='192.168.122.10', host_port=2222, guest_port=22, sources=['198.51.100.0/24']),
    dict(guest='dns01', guest_ip='192.168.122.11', proto='udp', host_port=5353, guest_port=53),
    dict(guest='app01', guest_ip='192.168.122.12', host_port='10000-10009', guest_port='20000-20009'),
    dict(guest='app02', guest_ip='192.168.122.13', host_port=8443, guest_port=443, masquerade='always'),
]


def example_forwards():
    """ISSUE_EXAMPLE, validated with PUB as the public address."""
    return F.parse_forwards(ISSUE_EXAMPLE, public_ip=PUB)


def as_live(text):
    """A restore file or payload as iptables-save would print the result of applying it to nothing."""
    lines = []
    for line in text.splitlines():
        if line.startswith('-I '):
            _i, chain, _one, spec = line.split(' ', 3)
            line = '-A %s %s' % (chain, spec)
        lines.append(line)
    return S.parse_save('\n'.join(lines) + '\n')


def small_desired():
    """Two forwards (one udp with a source and masquerade always), IPv4."""
    dns = fwd(guest='dns', guest_ip='192.168.122.11', proto='udp', host_port=53, guest_port=53,
              sources=['198.51.100.0/24'], masquerade='always')
    forwards = F.parse_forwards([fwd(), dns], public_ip=PUB)
    return R.desired_state(forwards, 4)
