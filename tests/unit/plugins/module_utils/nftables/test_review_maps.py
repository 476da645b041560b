# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Review of the dispatch-maps change (a7a885b..91a8f32): the defects a hostile review found, each a test
that failed before its fix. No root."""

from __future__ import annotations

import hashlib
import ipaddress

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils import _converge as C
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import backend as NB
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as R
from ansible_collections.kvmnet.nat.tests.support.nftsets import resum
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes

PUB = '203.0.113.10'


def hairpin_desired():
    forwards = F.parse_forwards([dict(guest='web01', guest_ip='192.168.122.10', host_port=8080, guest_port=80,
                                      guest_network='192.168.122.0/24')], public_ip=PUB)
    return R.desired_state(forwards)


# ---------------------------------------------------------------- 1. persisted: hairpin network vs its set's tag

def test_a_saved_hairpin_rule_whose_network_is_not_its_sets_is_refused():
    """rules.py names the set after the network (hairpin4_<net_tag(net)>) and matches ``ip saddr <net>``; a
    saved file whose rule names another network (here: the outside clients') is something rules.py can
    never write, yet it passes every check and is loaded at boot: outside clients get masqueraded."""
    text = K.persist_text(hairpin_desired())
    assert 'ip saddr 192.168.122.0/24 ip daddr' in text
    edited = resum(text.replace('ip saddr 192.168.122.0/24 ip daddr', 'ip saddr 203.0.113.0/24 ip daddr'))
    assert R.net_tag(ipaddress.ip_network('203.0.113.0/24')) not in edited      # the set's tag stayed
    with pytest.raises(B.RulesetError):
        K.desired_from_persisted(edited, 'KVMNAT')


# ---------------------------------------------------------------- 2. persisted: a file of the previous release

# What kvmnet.nat at 83ced04 (the commit before this change) saved for one forward with hairpin (masquerade
# auto with its guest network): the same header, format=1. Generated with that commit's persist_text.
OLD_BODY = '''table inet kvmnet_nat
delete table inet kvmnet_nat
table inet kvmnet_nat {
\tset hairpin4 {
\t\ttype ipv4_addr . ipv4_addr . inet_proto . inet_service
\t\tflags interval
\t\telements = { 192.168.122.0/24 . 203.0.113.10 . tcp . 8080 }
\t}
\tmap port4 {
\t\ttype ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service
\t\telements = { 203.0.113.10 . tcp . 8080 : 192.168.122.10 . 80 }
\t}
\tchain dispatch {
\t\tip saddr . ip daddr . meta l4proto . th dport @hairpin4 ct mark set ct mark | 0x00400000
\t\tip daddr . meta l4proto . th dport @port4 ct mark set ct mark | 0x00200000 dnat ip to ip daddr . meta l4proto . th dport map @port4
\t}
\tchain output {
\t\ttype nat hook output priority -100; policy accept;
\t\tfib daddr type local jump dispatch
\t}
\tchain postrouting {
\t\ttype nat hook postrouting priority 100; policy accept;
\t\tct mark & 0x00400000 == 0x00400000 masquerade
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority -100; policy accept;
\t\tjump dispatch
\t}
}
'''
OLD_FILE = ('# Managed by kvmnet.nat: only its own table inet kvmnet_nat. Do not edit.\n'
            '# kvmnet-nat-restore format=1 backend=nftables prefix=KVMNAT table=kvmnet_nat sha256=%s\n%s'
            % (hashlib.sha256(OLD_BODY.encode()).hexdigest(), OLD_BODY))


def test_a_file_the_previous_release_saved_still_restores():
    """The saved file keeps format=1, and the validator still takes the forms the previous commit wrote
    (set hairpin4, its rule, ``ct mark & 0x00400000 == 0x00400000 masquerade``): kvmnet-nat-restore, which
    the role updates (persist.yml) before the file is rewritten (apply.yml), would otherwise refuse it at
    boot and on the libvirt hook (no forwards, no accept rule) until a later run succeeds."""
    assert K.read_persisted(OLD_FILE)[0]['valid']
    desired = K.desired_from_persisted(OLD_FILE, 'KVMNAT')
    assert desired.table.sets['port4'].elements == ('203.0.113.10 . tcp . 8080 : 192.168.122.10 . 80',)


def test_the_old_forms_beside_the_new_are_refused():
    """No renderer wrote the old masquerade (on the masquerade mark alone) beside the new sets: with a
    hairpin mark set on a key whose sources did not match, it would masquerade the host's own connection."""
    text = K.persist_text(hairpin_desired())
    edited = resum(text.replace('ct mark & 0x00600000 == 0x00600000 masquerade', 'ct mark & 0x00400000 == 0x00400000 masquerade'))
    with pytest.raises(B.RulesetError, match='forms saved before 2026-12-06 beside forms saved since'):
        K.desired_from_persisted(edited, 'KVMNAT')
    assert K.desired_from_persisted(text, 'KVMNAT').table == hairpin_desired().table


# ---------------------------------------------------------------- 3. two guest networks whose tags collided

# sha256('10.89.246.0/24')[:8] == sha256('10.200.40.0/25')[:8] == '19619b64' (a birthday search over 10/8):
# the first tag (8 hex digits of a hash) gave both networks one set; the tag is now the network's own bits
# and its length, unique by construction, so both get a set of their own and the module converges
COLLIDING = [dict(guest='web01', guest_ip='10.89.246.10', host_port=8080, guest_port=80, guest_network='10.89.246.0/24'),
             dict(guest='web02', guest_ip='10.200.40.10', host_port=8081, guest_port=80, guest_network='10.200.40.0/25')]


def test_networks_whose_hashes_collided_get_a_set_each():
    assert hashlib.sha256(b'10.89.246.0/24').hexdigest()[:8] == hashlib.sha256(b'10.200.40.0/25').hexdigest()[:8]
    table = R.desired_state(F.parse_forwards(COLLIDING, public_ip=PUB)).table
    assert {n: table.sets[n].elements for n in table.sets if n.startswith('hairpin4_')} == {
        'hairpin4_0a59f6_24': ('203.0.113.10 . tcp . 8080',), 'hairpin4_0ac8280_25': ('203.0.113.10 . tcp . 8081',)}
    rules = table.chains['dispatch'].rules
    assert 'ip saddr 10.89.246.0/24 ip daddr . meta l4proto . th dport @hairpin4_0a59f6_24 ct mark set ct mark | 0x00400000' in rules
    assert 'ip saddr 10.200.40.0/25 ip daddr . meta l4proto . th dport @hairpin4_0ac8280_25 ct mark set ct mark | 0x00400000' in rules
    assert K.desired_from_persisted(K.persist_text(R.desired_state(F.parse_forwards(COLLIDING, public_ip=PUB))),
                                    'KVMNAT').table == table


@pytest.mark.parametrize('network, tag', [
    ('192.168.122.0/24', 'c0a87a_24'), ('192.168.122.0/23', 'c0a87a_23'), ('192.168.122.0/25', 'c0a87a0_25'),
    ('192.168.122.128/25', 'c0a87a8_25'), ('10.0.0.0/8', '0a_8'), ('128.0.0.0/1', '8_1'),
    ('2001:db8:122::/64', '20010db801220000_64'), ('2001:db8::1/128', '20010db8000000000000000000000001_128'),
])
def test_the_tag_is_the_networks_own_bits_and_length(network, tag):
    assert R.net_tag(ipaddress.ip_network(network)) == tag


def test_a_renderer_refusal_fails_the_module_cleanly_not_with_a_traceback(monkeypatch):
    """What the renderer refuses (a ValueError) reaches the module as a RulesetError: fail_json saying
    nothing was changed, not a traceback."""
    forwards = F.parse_forwards(COLLIDING, public_ip=PUB)

    def refuse(forwards, prefix):
        raise ValueError('refusing to write the comment %r' % 'x"')
    monkeypatch.setattr(R, 'desired_state', refuse)

    def steps(module):
        NB.Engine(module, 'KVMNAT').open().desired(forwards)       # what _converge.plan_families does first
    module = fakes.FakeModule({})
    with pytest.raises(fakes.Exit) as info:                        # fail_json, not ValueError
        C.run(module, steps)
    assert info.value.result.get('failed') and 'refusing to write the comment' in info.value.result['msg']
    assert 'nothing was changed' in info.value.result['msg']
