# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/iptables/grammar.py: every payload line is one the engine writes; engine output and fuzzed
input always pass it, nothing else does."""

from __future__ import annotations

import random
import time

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import grammar as G
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.tests.support.rulesets import as_live, small_desired


def test_every_line_the_engine_writes_passes_its_grammar():
    desired = small_desired()
    G.check_payload(P.plan({}, desired).payload, 'KVMNAT')
    G.check_payload(K.persist_text(desired, 'nft'), 'KVMNAT', comments=True)
    G.check_payload(P.plan(as_live(K.persist_text(desired, 'nft')),
                           R.desired_state([], 4)).payload, 'KVMNAT')


GOOD_RULE = ('-d 203.0.113.10/32 -p tcp -m tcp --dport 8080 -m comment --comment "kvmnet.nat: web01 tcp/8080->80" '
             '-j DNAT --to-destination 192.168.122.10:80')


@pytest.mark.parametrize('line', [
    '-F',
    '-F KVMNAT_DNAT',
    '-X LIBVIRT_FWI',
    ':INPUT DROP [0:0]',
    ':LIBVIRT_PRT - [0:0]',
    '-P FORWARD ACCEPT',
    '-A LIBVIRT_PRT ' + GOOD_RULE,                                  # not our chain
    '-A KVMNAT_FWD ' + GOOD_RULE,                                   # our chain, other table
    '-A KVMNAT_DNAT -j ACCEPT',                                     # no comment
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('-d 203.0.113.10/32', '-d 203.0.113.10%1/32'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('192.168.122.10:80', '192.168.122.10:80 -j ACCEPT'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('--dport 8080', '--dport ８０８０'),
    '-A KVMNAT_DNAT ' + GOOD_RULE + '\r',
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('-p tcp', '-p tcp -m state --state NEW'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('web01', 'web01" -j ACCEPT "'),
    '-A KVMNAT_DNAT ' + GOOD_RULE.replace('-d 203.0.113.10/32', '-d 0.0.0.0/0'),
    '-D PREROUTING -j KVMNAT_DNAT',                                 # not exactly our jump
    '-D FORWARD -j LIBVIRT_FWX',
    '-I PREROUTING 2 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
    '-I INPUT 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT',
    '# a comment',
    '*filter',
])
def test_grammar_refuses_every_line_the_engine_does_not_write(line):
    with pytest.raises(G.PayloadError):
        G.check_payload('*nat\n%s\nCOMMIT\n' % line, 'KVMNAT')


def test_grammar_accepts_the_good_rule_in_its_table():
    G.check_payload('*nat\n:KVMNAT_DNAT - [0:0]\n-A KVMNAT_DNAT %s\nCOMMIT\n' % GOOD_RULE, 'KVMNAT')


# ---------------------------------------------------------------- fuzz: every string parameter (issue 11)


ALPHABET = (['a', 'Z', '0', '9', '.', ':', '/', '-', '_', '%', ' ', '\n', '\r', '\t', '"', "'", '#', '!', '$', '(',
             '`', ';', '\\', '\x00', 'é', '٨', '８', '\u200b', '\ufeff'] + list('0123456789abcdef'))
SEEDS = {
    'guest': ['web01', 'a.b+c:d@e-f'], 'guest_ip': ['192.168.122.10', '192.168.122.77'],
    'proto': ['tcp', 'udp', 'sctp'], 'host_port': ['8080', '10000-10009', '1:2'], 'guest_port': ['80', '20000-20009'],
    'masquerade': ['auto', 'always', 'never'], 'public_ip': ['203.0.113.10', '203.0.113.99'],
    'in_interface': ['eth0', 'br+'], 'guest_network': ['192.168.122.0/24', '192.168.0.0/16'],
    'sources': ['198.51.100.0/24', '192.0.2.7'],
}
SEEDS6 = dict(SEEDS, guest_ip=['2001:db8:122::10', '2001:db8:122:0:1::7'], public_ip=['2001:db8::10', '2001:db8::99'],
              guest_network=['2001:db8:122::/64', '2001:db8:122::/48'], sources=['2001:db8:1::/48', '2001:db8::7'])


def _mutate(rng, text):
    text = list(text)
    for _step in range(rng.randint(1, 3)):
        op = rng.random()
        pos = rng.randint(0, len(text))
        if op < 0.5:
            text.insert(pos, rng.choice(ALPHABET))
        elif text:
            del text[min(pos, len(text) - 1)]
    return ''.join(text)


def _raw(rng):
    """A forward from valid seeds with one or two fields mutated, or (one time in four) random everywhere."""
    wild = rng.random() < 0.25
    seeds = rng.choice([SEEDS, SEEDS6])
    raw = {key: rng.choice(values) for key, values in seeds.items() if key != 'sources'}
    raw['sources'] = [rng.choice(seeds['sources']) for _index in range(rng.randint(0, 2))]
    for key in rng.sample(sorted(SEEDS), k=len(SEEDS) if wild else rng.randint(0, 2)):
        if key == 'sources':
            raw['sources'] = [_mutate(rng, s) for s in raw['sources']] or [_mutate(rng, '198.51.100.0/24')]
        elif wild:
            raw[key] = ''.join(rng.choice(ALPHABET) for _index in range(rng.randint(0, 12)))
        else:
            raw[key] = _mutate(rng, str(raw[key]))
    for key in ('guest_network', 'public_ip', 'in_interface', 'guest_port'):
        if rng.random() < 0.5:
            raw.pop(key, None)
    if raw.get('guest_network') and not wild and raw['guest_network'] in seeds['guest_network'] and \
            raw['guest_ip'] == seeds['guest_ip'][1]:
        raw.pop('guest_network')                      # 192.168.122.77 is not in every seed network
    return raw


def test_fuzz_never_a_traceback_never_a_line_outside_the_grammar():
    """Random strings and unicode in every string parameter, bounded in count and time."""
    rng = random.Random(2026)
    deadline = time.monotonic() + 20
    accepted = refused_count = 0
    for case in range(4000):
        if time.monotonic() > deadline:
            break
        raws = [_raw(rng) for _index in range(rng.randint(1, 4))]
        for index, raw in enumerate(raws):          # distinct ports, so most sets do not overlap
            if isinstance(raw.get('host_port'), str) and raw['host_port'] in SEEDS['host_port']:
                raw['host_port'] = str(2000 + 20 * index + case % 7)
                raw.pop('guest_port', None)
        kwargs = {'public_ip': rng.choice(['203.0.113.10', _mutate(rng, '203.0.113.10')]),
                  'public_ip6': rng.choice(['2001:db8::10', _mutate(rng, '2001:db8::10')]),
                  'in_interface': rng.choice([None, None, 'eth0', _mutate(rng, 'eth0')])}
        prefix = rng.choice(['KVMNAT', 'LAB2', _mutate(rng, 'KVMNAT')])
        try:
            forwards = F.parse_forwards(raws, **kwargs)
        except F.ForwardError as exc:
            assert exc.errors and all(isinstance(e, str) for e in exc.errors)
            refused_count += 1
            continue
        if not R.valid_prefix(prefix):
            continue
        accepted += 1
        for family in (4, 6):
            desired = R.desired_state(forwards, family, prefix)
            text = K.persist_text(desired, 'nft')         # runs plan({}) and both grammar checks
            live = as_live(text)
            assert P.plan(live, desired).changed is False, case
            P.plan(live, R.desired_state([], family, prefix))   # removal passes the grammar too
    assert accepted > 100 and refused_count > 100, (accepted, refused_count)
