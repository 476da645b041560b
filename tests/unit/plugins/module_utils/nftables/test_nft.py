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


def _chain(family, table, name):
    return '{"chain": {"family": "%s", "table": "%s", "name": "%s", "handle": 1}}' % (family, table, name)


CHAINS = ('{"nftables": [{"metainfo": {"json_schema_version": 1}}, %s]}' % ', '.join([
    _chain('ip', 'filter', 'FORWARD'), _chain('ip', 'filter', 'INPUT'), _chain('ip', 'libvirt_network', 'forward'),
    _chain('inet', 'kvmnet_nat', 'prerouting'), _chain('inet', 'kvmnet_nat_test1', 'prerouting')]))


def _table(family, name, chain):
    return ('{"nftables": [{"metainfo": {}}, {"table": {"family": "%s", "name": "%s"}}, '
            '{"chain": {"family": "%s", "table": "%s", "name": "%s"}}]}' % (family, name, family, name, chain))


def test_list_ours_reads_only_our_table_and_libvirts():
    module = FakeModule(answers=[
        ('nft -j list chains', (0, CHAINS, '')),
        ('nft -j list table ip libvirt_network', (0, _table('ip', 'libvirt_network', 'forward'), '')),
        ('nft -j list table inet kvmnet_nat', (0, _table('inet', 'kvmnet_nat', 'prerouting'), '')),
    ])
    data = N.list_ours(module, '/usr/sbin/nft', 'kvmnet_nat')
    assert [cmd for cmd, _data in module.calls] == [
        'nft -j list chains', 'nft -j list table ip libvirt_network', 'nft -j list table inet kvmnet_nat']
    kinds = [next(iter(item)) for item in data['nftables']]
    assert kinds == ['table'] * 4 + ['chain', 'chain']     # every table with a chain, once; the chains of the two read
    assert [item['table']['name'] for item in data['nftables'][:4]] == [
        'filter', 'libvirt_network', 'kvmnet_nat', 'kvmnet_nat_test1']


def test_list_ours_refuses_what_is_not_json():
    module = FakeModule(answers=[('nft -j list chains', (0, 'table ip filter {', ''))])
    with pytest.raises(CommandError):
        N.list_ours(module, '/usr/sbin/nft', 'kvmnet_nat')


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
