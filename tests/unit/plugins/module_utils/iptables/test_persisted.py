# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/iptables/persisted.py: the persisted copy kvmnet-nat-restore applies, and reading it back."""

from __future__ import annotations

import hashlib

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.tests.support.rulesets import example_forwards


def test_persist_text_is_a_header_and_the_payload_that_builds_everything():
    desired = R.desired_state(example_forwards(), 4)
    text = K.persist_text(desired, 'nft')
    header, meta, body = text.split('\n', 2)
    assert header.startswith('# Managed by kvmnet.nat')
    assert meta == '# kvmnet-nat-restore format=2 family=4 flavour=nft prefix=KVMNAT sha256=%s' % (
        hashlib.sha256(body.encode()).hexdigest())
    assert body == P.plan({}, desired).payload
    lines = body.splitlines()
    assert lines[0] == '*filter' and lines.count('COMMIT') == 2
    rules = [line for line in lines if line.startswith(('-A', '-I'))]
    assert all(line.startswith(('-A KVMNAT_', '-I ')) for line in rules)
    assert [line for line in rules if line.startswith('-I')] == [
        '-I FORWARD 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD',
        '-I PREROUTING 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
        '-I OUTPUT 1 -m addrtype --dst-type LOCAL -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
        '-I POSTROUTING 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_SNAT',
    ]


@pytest.mark.parametrize('edit, message', [
    (lambda text: text.replace('-j DNAT', '-j ACCEPT', 1), 'checksum does not match'),
    (lambda text: text.split('\n', 2)[2], 'no valid kvmnet-nat-restore header'),
    (lambda text: text.replace('family=4', 'family=6'), 'family=6 (expected 4)'),
])
def test_a_persisted_file_is_read_back_only_when_intact_and_for_this_run(edit, message):
    text = K.persist_text(R.desired_state(example_forwards(), 4), 'nft')
    assert K.desired_from_persisted(text, 4, 'KVMNAT') == R.desired_state(example_forwards(), 4)
    with pytest.raises(B.RulesetError) as exc:
        K.desired_from_persisted(edit(text), 4, 'KVMNAT')
    assert message in str(exc.value)


@pytest.mark.parametrize('edit, fields', [
    (lambda text: text, {'valid': True, 'format': '2', 'family': '4', 'flavour': 'nft', 'prefix': 'KVMNAT'}),
    # kvmnet-nat-restore reads the header on line 2 and sums lines 3 on: elsewhere it is no header
    (lambda text: text.split('\n', 1)[1], {'valid': False}),
    (lambda text: '# an admin\'s note\n' + text, {'valid': False}),
    (lambda text: text.split('\n', 1)[0] + '\n', {'valid': False}),
    (lambda text: '', {'valid': False}),
])
def test_the_header_is_read_from_line_2_as_the_restore_script_reads_it(edit, fields):
    text = edit(K.persist_text(R.desired_state(example_forwards(), 4), 'nft'))
    read, body = K.read_persisted(text)
    assert {key: read.get(key) for key in fields} == fields
    assert body == (text.split('\n', 2)[2] if fields['valid'] else text)


@pytest.mark.parametrize('flavour, prefix, ok', [
    ('nft', 'KVMNAT', True),
    ('legacy', 'KVMNAT', True),
    ('unknown', 'FWD2', True),
    ('nft\n-A FORWARD -j ACCEPT', 'KVMNAT', False),      # a header line must never carry a rule
    ('bogus', 'KVMNAT', False),
    ('nft', 'kvmnat', False),
])
def test_the_header_is_made_only_of_a_known_flavour_and_a_valid_prefix(flavour, prefix, ok):
    desired = R.desired_state(example_forwards(), 4, prefix if R.valid_prefix(prefix) else 'KVMNAT')
    desired.prefix = prefix                               # a prefix that never passed the module's checks
    if ok:
        text = K.persist_text(desired, flavour)
        assert text.split('\n')[1].startswith('# kvmnet-nat-restore format=2 family=4 flavour=%s prefix=%s ' % (flavour, prefix))
    else:
        with pytest.raises(K.PayloadError):
            K.persist_text(desired, flavour)


def test_without_the_check_the_text_is_the_same_and_only_the_check_is_skipped(monkeypatch):
    desired = R.desired_state(example_forwards(), 4)
    checked = K.persist_text(desired, 'nft')
    calls = []
    monkeypatch.setattr(P, 'check_payload', lambda *args, **kwargs: calls.append(args))
    assert K.persist_text(desired, 'nft', check=False) == checked
    assert calls == []
    K.persist_text(desired, 'nft')
    assert len(calls) == 1
