# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Record the nftables backend's unit fixtures with the real nft, in a throwaway namespace (root).

    PYTHONPATH=<collections> python tests/netns/record_nft_fixtures.py

libvirt.json: libvirt's tables (tests/support/nftsets.LIBVIRT) and an admin's table; applied.json: the
same after the plan for nftsets.all_forwards() was checked and loaded. For the doctor (doctor-*.json): our
accept rule moved below libvirt's jumps; an admin's table dropping one guest's port on the forward hook; an
admin's ``table inet filter`` with ``policy drop`` on forward. Nothing runs outside the
namespace ``kvnft<pid>-rec``, which is deleted at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import sys

from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import ruleset as L
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.support.topology import Topology


def pretty(text):
    return json.dumps(json.loads(text), indent=1, sort_keys=True) + '\n'


def record(out_dir=nftsets.FIXTURES):
    with Topology('kvnft%d' % os.getpid(), ('rec',)) as topo:
        for name in ('virbr0', 'eth0', 'eth1'):
            topo.x('rec', 'ip', 'link', 'add', name, 'type', 'bridge')
        topo.x('rec', 'nft', '-f', '-', data=nftsets.LIBVIRT + nftsets.ADMIN)
        before = topo.x('rec', 'nft', '-j', 'list', 'ruleset').stdout
        desired = R.desired_state(nftsets.all_forwards())
        payload = P.plan(L.parse(before, desired.name), desired).payload
        topo.x('rec', 'nft', '-c', '-f', '-', data=payload)
        topo.x('rec', 'nft', '-f', '-', data=payload)
        after = topo.x('rec', 'nft', '-j', 'list', 'ruleset').stdout
        doctor = _doctor_fixtures(topo)
    for name, text in [('libvirt.json', before), ('applied.json', after)] + doctor:
        with open(os.path.join(out_dir, name), 'w') as handle:
            handle.write(pretty(text))
    return payload


def _doctor_fixtures(topo):
    """The broken hosts of the doctor's unit tests, each made from the applied ruleset (and put back after)."""
    out = []
    for name, script in (('doctor-admin-drop.json', nftsets.ADMIN_DROP_ONE),
                         ('doctor-policy-drop.json', nftsets.ADMIN_POLICY_DROP)):
        topo.x('rec', 'nft', '-f', '-', data=script)
        out.append((name, topo.x('rec', 'nft', '-j', 'list', 'ruleset').stdout))
        topo.x('rec', 'nft', 'delete', 'table', 'inet', script.split()[2])
    listed = json.loads(topo.x('rec', 'nft', '-j', '-a', 'list', 'chain', 'ip', 'libvirt_network', 'forward').stdout)
    handle = next(obj['rule']['handle'] for obj in listed['nftables']
                  if 'rule' in obj and obj['rule'].get('comment') == R.ACCEPT_COMMENT)
    topo.x('rec', 'nft', 'delete', 'rule', 'ip', 'libvirt_network', 'forward', 'handle', str(handle))
    topo.x('rec', 'nft', 'add', 'rule', 'ip', 'libvirt_network', 'forward', *R.ACCEPT_RULE.split(' comment ', maxsplit=1)[0].split(),
           'comment', '"%s"' % R.ACCEPT_COMMENT)
    out.append(('doctor-misplaced.json', topo.x('rec', 'nft', '-j', 'list', 'ruleset').stdout))
    return out


if __name__ == '__main__':
    sys.stdout.write(record())
