# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/nftables/backend.py: one Backend for both families, over a fake host. No root."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as NB
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.unit.plugins.fakes import FakeModule


@pytest.mark.parametrize('prefix, problems', [('KVMNAT', 0), ('TEST1', 0), ('bad', 1), ('', 1)])
def test_engine_problems(prefix, problems):
    assert len(NB.Engine(FakeModule(), prefix).problems()) == problems


def test_no_nft_no_backend():
    engine = NB.Engine(FakeModule(binaries=[]), 'KVMNAT')
    with pytest.raises(B.BackendUnavailable):
        engine.open('inet')
    with pytest.raises(B.BackendUnavailable):
        NB.Engine(FakeModule(), 'KVMNAT').open(4)


def test_one_backend_for_both_families_converges_and_reads_back():
    state = {'ruleset': nftsets.fixture('libvirt.json')}

    def host(command):
        listed = nftsets.listing(state['ruleset'], command)
        if listed:
            return listed
        if command == 'nft -f -':
            state['ruleset'] = nftsets.fixture('applied.json')     # what the real nft made of this payload
        return 0, '', ''
    module = FakeModule(answers=host)
    engine = NB.Engine(module, 'KVMNAT')
    assert engine.scopes == ('inet',)
    backend = engine.open('inet')
    assert (backend.families, backend.key, backend.flavour) == ((4, 6), 'inet', 'nftables')
    desired = backend.desired(nftsets.all_forwards())
    plan = backend.plan(backend.read(), desired)
    assert plan.changed
    backend.test(plan)
    backend.apply(plan)
    assert [c for c, _d in module.calls] == ['nft -j list chains', 'nft -j list table ip libvirt_network',
                                             'nft -j list table ip6 libvirt_network', 'nft -c -f -', 'nft -f -']
    assert backend.read_back(desired).changed is False
    assert backend.hooks(backend.read()) == {('ip', 'libvirt_network forward'): [1], ('ip6', 'libvirt_network forward'): [1]}


def test_persisted_round_trip_and_open_saved():
    backend = NB.Engine(FakeModule(), 'KVMNAT').open('inet')
    desired = backend.desired(nftsets.all_forwards())
    text = backend.persisted_text(desired)
    assert backend.persisted_text(backend.desired([])) is None
    assert backend.desired_from_persisted(text).table == desired.table
    saved_backend, saved = NB.Engine(FakeModule(), 'OTHER').open_saved('inet', text)
    assert saved_backend.name == 'kvmnet_nat' and saved.table == desired.table     # the file's prefix, not the run's
    with pytest.raises(B.RulesetError):
        NB.Engine(FakeModule(), 'KVMNAT').open_saved('inet', text.replace('tcp', 'udp', 1))
    assert K.read_persisted(text)[0]['table'] == R.table_name('KVMNAT')
