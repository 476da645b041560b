# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Record the nftables backend's unit fixtures with the real nft, in a throwaway namespace (root).

    PYTHONPATH=<collections> python tests/netns/record_nft_fixtures.py

libvirt.json: libvirt's tables (tests/support/nftsets.LIBVIRT) and an admin's table; applied.json: the
same after the plan for nftsets.all_forwards() was checked and loaded. Nothing runs outside the
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
    for name, text in (('libvirt.json', before), ('applied.json', after)):
        with open(os.path.join(out_dir, name), 'w') as handle:
            handle.write(pretty(text))
    return payload


if __name__ == '__main__':
    sys.stdout.write(record())
