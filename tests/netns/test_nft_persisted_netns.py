# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The nftables backend's saved file, with real packets (root; nftlab.py's throwaway namespaces): restored
as written, its forwards and hairpin work; edited so that its hairpin rule names another network than its
set's (rules.py never writes one; a hostile review found it passed every check and, loaded, masqueraded
outside clients), it is refused before anything loads and the client is still seen as itself.
"""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.tests.support.nftsets import resum

from nftlab import NftLab

WEB = [dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80, guest_network='192.168.122.0/24')]


@pytest.fixture(scope='module')
def lab():
    lab = NftLab()
    try:
        lab.up()
        lab.server = lab.serve('web01', 'web01', ['80'], ['53'])
        yield lab
    finally:
        lab.down()


def restore(lab, text):
    """What kvmnet-nat-restore start does with a saved file: its Desired, planned and loaded."""
    backend = lab.backend()
    desired = backend.desired_from_persisted(text)
    plan = backend.plan(backend.read(), desired)
    backend.test(plan)
    backend.apply(plan)


def test_the_saved_file_as_written(lab):
    restore(lab, lab.backend().persisted_text(lab.backend().desired(F.parse_forwards(WEB, public_ip='203.0.113.10'))))
    assert lab.probe('client', 'tcp', '203.0.113.10', 8080, timeout=3) == 'web01 203.0.113.50 80'
    assert lab.probe('web02', 'tcp', '203.0.113.10', 8080, timeout=3) == 'web01 192.168.122.1 80'


def test_a_hairpin_rule_edited_to_another_network_is_refused_before_it_loads(lab):
    text = lab.backend().persisted_text(lab.backend().desired(F.parse_forwards(WEB, public_ip='203.0.113.10')))
    edited = resum(text.replace('ip saddr 192.168.122.0/24 ip daddr', 'ip saddr 203.0.113.0/24 ip daddr'))
    try:
        with pytest.raises(B.RulesetError):
            restore(lab, edited)
    finally:
        # what the edited file does once loaded: the outside client is masqueraded (the guest sees the host)
        seen = lab.probe('client', 'tcp', '203.0.113.10', 8080, timeout=3)
        print('outside client, after restoring the edited file:', seen)
    assert seen == 'web01 203.0.113.50 80'
