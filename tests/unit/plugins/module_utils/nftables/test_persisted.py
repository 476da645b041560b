# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/nftables/persisted.py: the saved file, and reading it back. No root, no host."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.tests.support import nftsets


def saved():
    return K.persist_text(R.desired_state(nftsets.all_forwards()))


def swap_elements(text):
    lines = text.split('\n')
    first = [i for i, line in enumerate(lines[:-1])
             if line.startswith('\t\t\t     ') and lines[i + 1].startswith('\t\t\t     ')][0]
    lines[first], lines[first + 1] = lines[first + 1], lines[first]
    return '\n'.join(lines)


def test_header_and_the_script_from_nothing():
    desired = R.desired_state(nftsets.all_forwards())
    text = saved()
    comment, meta, body = text.split('\n', 2)
    assert comment.startswith('# Managed by kvmnet.nat')
    assert meta == '# kvmnet-nat-restore format=1 backend=nftables prefix=KVMNAT table=kvmnet_nat sha256=%s' % (
        hashlib.sha256(body.encode()).hexdigest())
    assert body == P.table_commands('kvmnet_nat', desired.table)
    assert 'libvirt_network' not in body                    # the accept rule is the hook's, not the file's
    assert K.read_persisted(text)[0]['valid']


def test_read_back_gives_the_desired_state():
    back = K.desired_from_persisted(saved(), 'KVMNAT')
    assert back.table == R.desired_state(nftsets.all_forwards()).table and back.accept == R.ACCEPT_RULE


@pytest.mark.parametrize('edit, message', [
    (lambda t: t[:len(t) // 2], 'checksum does not match'),                               # cut short
    (lambda t: t.replace('192.168.122.10', '192.168.122.99', 1), 'checksum does not match'),
    (lambda t: t.split('\n', 2)[2], 'no valid kvmnet-nat-restore header'),
    (lambda t: nftsets.resum(t.replace('prefix=KVMNAT', 'prefix=OTHER')), 'prefix=OTHER (expected KVMNAT)'),
    (lambda t: nftsets.resum(t[:len(t) // 2]), 'not one kvmnet.nat writes'),
    (lambda t: nftsets.resum(t.replace('\t\tjump dispatch\n', '\t\tjump dispatch\n\t\tdrop\n')), 'chain prerouting rule drop'),
    (lambda t: nftsets.resum(t.replace('comment "web02 tcp/7005->7005"', 'comment "x"; flush ruleset; "')), 'does not write'),
    (lambda t: nftsets.resum(t.replace('jump dispatch\n', 'jump dispatch\n', 1).replace('\tchain output {', '\tchain evil {')),
     'chain evil'),
    (lambda t: nftsets.resum(t.replace(' . 80,\n', ' . 80, 1.2.3.4 . tcp . 1 : 5.6.7.8 . 9,\n')), 'does not write'),
    (lambda t: nftsets.resum(swap_elements(t)), 'not exactly what'),
    (lambda t: nftsets.resum(t.replace('delete table inet kvmnet_nat', 'delete table ip libvirt_network')), 'does not start'),
])
def test_an_edited_or_cut_file_is_refused(edit, message):
    with pytest.raises(B.RulesetError) as exc:
        K.desired_from_persisted(edit(saved()), 'KVMNAT')
    assert message in str(exc.value)


def test_nothing_to_save():
    with pytest.raises(ValueError):
        K.persist_text(R.desired_state([]))


@pytest.mark.parametrize('text', ['', 'x', '# a\n# kvmnet-nat-restore format=1\n'])
def test_no_header_is_not_valid(text):
    assert K.read_persisted(text)[0]['valid'] is False
