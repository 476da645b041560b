# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Random valid forward sets, applied with real iptables, must read back exactly as planned.

Run inside a lab's hypervisor namespace only (netlab does): for each set, the engine's payload is
applied with iptables-restore --noflush, the ruleset is read back with iptables-save, and a second
plan must find nothing to change. Spellings that iptables prints differently (upper case, leading
zeros, uncompressed IPv6, ranges written with ':') are in the mix. Bounded in count and time.
Prints one JSON object: {"runs": N, "failures": [...]}.

Usage: converge_fuzz.py FLAVOUR SEED COUNT SECONDS
"""

from __future__ import annotations

import ipaddress
import json
import random
import subprocess
import sys
import time

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S

TOOLS = {4: 'iptables', 6: 'ip6tables'}


def spell6(rng, text):
    """The same IPv6 address or network, written the way an admin might."""
    if '/' in text:
        address, _sep, length = text.partition('/')
        return spell6(rng, address) + '/' + length
    ip = ipaddress.IPv6Address(text)
    return rng.choice([ip.exploded, ip.exploded.upper(), str(ip), str(ip).upper(),
                       ':'.join(h.lstrip('0') or '0' for h in ip.exploded.split(':'))])


def random_set(rng, family):
    forwards = []
    port = 1000
    for index in range(rng.randint(1, 24)):
        port += rng.randint(1, 400)
        size = rng.choice([1, 1, 1, 2, 10, 100])
        if port + size > 65535:
            break
        host = str(port) if size == 1 else rng.choice(['%d-%d', '%d:%d', ' %d - %d '])
        if size > 1:
            host = host % (port, port + size - 1)
        guest_first = rng.choice([port, rng.randint(1, 65535 - size)])
        guest = str(guest_first) if size == 1 else '%d-%d' % (guest_first, guest_first + size - 1)
        if family == 4:
            net = rng.choice(['192.168.122.0/24', '10.20.0.0/16', '172.16.5.0/28'])
            network = ipaddress.ip_network(net)
            ip = str(network.network_address + rng.randint(2, network.num_addresses - 2))
            sources = rng.sample(['198.51.100.0/24', '192.0.2.7', '192.0.2.128/25', '203.0.113.0/26'], rng.randint(0, 2))
            public = rng.choice([None, '203.0.113.10', '203.0.113.11'])
        else:
            net = rng.choice(['2001:db8:122::/64', '2001:db8:0:1::/64', 'fd00::/8'])
            network = ipaddress.ip_network(net)
            ip = spell6(rng, str(network.network_address + rng.randint(2, 2 ** 20)))
            choices = ['2001:db8:1::/48', '2001:db8::7', '::1:2:3:0/112']
            sources = [spell6(rng, s) for s in rng.sample(choices, rng.randint(0, 2))]
            public = rng.choice([None, spell6(rng, '2001:db8::10'), '2001:db8:0:0:0:0:0:11'])
            net = spell6(rng, net)
        forward = {'guest': rng.choice(['web01', 'app-2', 'db.3', 'x+y', 'a:b@c']) + str(index % 3),
                   'guest_ip': ip, 'proto': rng.choice(['tcp', 'udp', 'sctp', 'TCP'.lower()]), 'host_port': host,
                   'guest_port': guest, 'sources': sources, 'masquerade': rng.choice(['auto', 'always', 'never'])}
        if rng.random() < 0.7:
            forward['guest_network'] = net
        if public:
            forward['public_ip'] = public
        if rng.random() < 0.2:
            forward['in_interface'] = rng.choice(['eth0', 'eth+', 'br-lan.1', 'a_b@c'])
        forwards.append(forward)
    return forwards


def run(cmd, data=None):
    return subprocess.run(cmd, input=data, capture_output=True, text=True, check=False, timeout=60)


def main(flavour, seed, count, seconds):
    rng = random.Random(int(seed))
    deadline = time.monotonic() + float(seconds)
    failures, runs = [], 0
    for case in range(int(count)):
        if time.monotonic() > deadline:
            break
        family = rng.choice([4, 6])
        tool = '%s-%s' % (TOOLS[family], flavour)
        raws = random_set(rng, family)
        try:
            forwards = F.parse_forwards(raws, public_ip='203.0.113.10', public_ip6=spell6(rng, '2001:db8::10'),
                                        in_interface=None)
        except F.ForwardError:
            continue        # overlapping ports: a refusal, which is fine; convergence is what is tested
        runs += 1
        desired = R.desired_state(forwards, family)
        live = S.parse_save(run([tool + '-save']).stdout)
        plan = P.plan(live, desired)
        applied = run([tool + '-restore', '--noflush'], plan.payload)
        if applied.returncode != 0:
            failures.append({'case': case, 'step': 'apply', 'stderr': applied.stderr, 'forwards': raws})
            continue
        again = P.plan(S.parse_save(run([tool + '-save']).stdout), desired)
        if again.changed:
            failures.append({'case': case, 'step': 'read back', 'reasons': again.reasons, 'forwards': raws,
                             'payload': again.payload})
    for family in (4, 6):       # leave no rule of ours behind
        tool = '%s-%s' % (TOOLS[family], flavour)
        plan = P.plan(S.parse_save(run([tool + '-save']).stdout), R.desired_state([], family))
        if plan.changed:
            run([tool + '-restore', '--noflush'], plan.payload)
    print(json.dumps({'runs': runs, 'failures': failures[:5], 'failed': len(failures)}))


if __name__ == '__main__':
    main(*sys.argv[1:5])
