# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/nftables/nft.py: the commands, as argument lists with LANG=C. No root, no host."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import nft as N
from ansible_collections.kvmnet.nat.tests.unit.plugins.fakes import FakeModule

PAYLOAD = 'table inet kvmnet_nat\ndelete table inet kvmnet_nat\ntable inet kvmnet_nat {\n\tbogus\n}\n'


def test_list_ruleset():
    module = FakeModule(answers=[('nft -j list ruleset', (0, '{"nftables": []}', ''))])
    assert N.list_ruleset(module, '/usr/sbin/nft') == '{"nftables": []}'


@pytest.mark.parametrize('test, command', [(True, 'nft -c -f -'), (False, 'nft -f -')])
def test_load_sends_the_payload_on_stdin(test, command):
    module = FakeModule(answers=[(command, (0, '', ''))])
    N.load(module, '/usr/sbin/nft', PAYLOAD, test=test)
    assert module.calls == [(command, PAYLOAD)]


@pytest.mark.parametrize('stderr, context', [
    ('/dev/stdin:4:2-6: Error: syntax error\n\tbogus\n', 'applying the nftables transaction (check run), at "bogus"'),
    ('Error: Could not process rule: No such file or directory', 'applying the nftables transaction (check run)'),
])
def test_a_refused_transaction_names_its_line(stderr, context):
    module = FakeModule(answers=[('nft -c -f -', (1, '', stderr))])
    with pytest.raises(CommandError) as exc:
        N.load(module, '/usr/sbin/nft', PAYLOAD, test=True)
    assert exc.value.context == context and exc.value.rc == 1
