# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""plugins/module_utils/iptables/plan.py: the payload that takes the live tables to the desired state. No root, no host."""

from __future__ import annotations

import pytest

from ansible_collections.kvmnet.nat.plugins.module_utils import _backend as B
from ansible_collections.kvmnet.nat.plugins.module_utils import _forward as F
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import persisted as K
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import plan as P
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import rules as R
from ansible_collections.kvmnet.nat.plugins.module_utils.iptables import save as S
from ansible_collections.kvmnet.nat.tests.support.rulesets import ISSUE_EXAMPLE, PUB, as_live, example_forwards, fixture, fwd, small_desired


def live_with_ours(extra_forward_rules=(), jump_positions=None):
    """The fixture with our chains applied as the engine renders them."""
    tables = S.parse_save(fixture('libvirt-docker.save'))
    desired = R.desired_state(example_forwards(), 4)
    for (tname, chain), rules in desired.chains.items():
        tables[tname].chains[chain] = '-'
        tables[tname].rules[chain] = list(rules)
    for tname, chain, spec in desired.jumps:
        tables[tname].rules.setdefault(chain, []).insert(0, spec)
    for spec in extra_forward_rules:
        tables['filter'].rules['FORWARD'].insert(0, spec)
    return tables, desired


def test_fresh_host_payload():
    tables = S.parse_save(fixture('libvirt-docker.save'))
    result = P.plan(tables, R.desired_state(example_forwards(), 4))
    lines = result.payload.splitlines()
    assert result.changed
    assert lines[0] == '*filter'
    assert lines[1] == ':KVMNAT_FWD - [0:0]'
    assert lines[-2] == '-I POSTROUTING 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_SNAT'
    assert lines.count('COMMIT') == 2
    assert not any(line.startswith(('-F', '-X', '-D')) for line in lines)  # nothing of others touched
    assert not any('INPUT' in line for line in lines)
    assert not any('LIBVIRT' in line or 'DOCKER' in line for line in lines)


def test_unchanged_ruleset_plans_nothing():
    tables, desired = live_with_ours()
    result = P.plan(tables, desired)
    assert (result.changed, result.payload, result.reasons) == (False, '', [])
    assert result.before == result.after


def test_rule_inserted_above_our_jump_moves_it_back():
    tables, desired = live_with_ours(extra_forward_rules=['-s 192.0.2.66/32 -j DROP'])
    result = P.plan(tables, desired)
    assert result.payload == (
        '*filter\n'
        '-D FORWARD -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD\n'
        '-I FORWARD 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD\n'
        'COMMIT\n')
    assert result.reasons == ['filter FORWARD: jump was at position 2, moved back to 1']


def test_duplicate_jumps_are_reduced_to_one():
    tables, desired = live_with_ours()
    ours = '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'
    tables['nat'].rules['PREROUTING'].append(ours)  # e.g. restored twice at boot by an old script
    result = P.plan(tables, desired)
    assert result.payload == (
        '*nat\n'
        '-D PREROUTING %s\n'
        '-D PREROUTING %s\n'
        '-I PREROUTING 1 %s\n'
        'COMMIT\n' % (ours, ours, ours))
    assert result.reasons == ['nat PREROUTING: 2 jumps to kvmnet.nat chains, keeping one']


def test_removing_a_forward_rewrites_only_that_chain_set():
    tables, _old = live_with_ours()
    fewer = [f for f in ISSUE_EXAMPLE if f['guest'] != 'dns01']
    result = P.plan(tables, R.desired_state(F.parse_forwards(fewer, public_ip=PUB), 4))
    removed = sorted(set(result.before) - set(result.after))
    assert result.changed
    assert set(result.after) - set(result.before) == set()
    assert all('dns01' in line for line in removed), removed
    assert len(removed) == 2  # its DNAT and its forward accept; the network's established accept stays
    assert 'KVMNAT_SNAT' not in result.payload  # unchanged chain is not rewritten


def test_absent_removes_jumps_then_chains():
    tables, _desired = live_with_ours()
    result = P.plan(tables, R.desired_state([], 4))
    assert result.after == []
    filter_block = result.payload.split('COMMIT')[0].splitlines()
    assert filter_block == [
        '*filter',
        ':KVMNAT_FWD - [0:0]',
        '-D FORWARD -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD',
        '-X KVMNAT_FWD',
    ]


def test_absent_on_a_host_without_our_rules_is_a_no_op():
    result = P.plan(S.parse_save(fixture('libvirt-docker.save')), R.desired_state([], 4))
    assert (result.changed, result.payload) == (False, '')


@pytest.mark.parametrize('mutate, message', [
    (lambda t: t['filter'].rules['KVMNAT_FWD'].append('-j DROP'),
     'chain KVMNAT_FWD in table filter exists and holds rules kvmnet.nat did not write (first: -j DROP)'),
    (lambda t: t['filter'].rules['DOCKER-USER'].insert(0, '-j KVMNAT_FWD'),
     'rule "-A DOCKER-USER -j KVMNAT_FWD" in table filter jumps into a kvmnet.nat chain'),
    # our comment is always quoted (it holds a space): an unquoted kvmnet.nat: comment is someone else's
    # (the planner once took it for ours, and would have flushed it away; the doctor never did)
    (lambda t: t['filter'].rules['KVMNAT_FWD'].append('-m comment --comment kvmnet.nat:x -j DROP'),
     'holds rules kvmnet.nat did not write (first: -m comment --comment kvmnet.nat:x -j DROP)'),
])
def test_foreign_use_of_our_chains_is_refused(mutate, message):
    tables, desired = live_with_ours()
    mutate(tables)
    with pytest.raises(B.RulesetError) as exc:
        P.plan(tables, desired)
    assert message in str(exc.value)


def test_foreign_chain_with_our_name_on_a_fresh_host():
    tables = S.parse_save(fixture('libvirt-docker.save'))
    tables['nat'].chains['KVMNAT_DNAT'] = '-'
    tables['nat'].rules['KVMNAT_DNAT'] = ['-p tcp -m tcp --dport 80 -j DNAT --to-destination 10.0.0.1:80']
    with pytest.raises(B.RulesetError):
        P.plan(tables, R.desired_state(example_forwards(), 4))


def test_other_prefix_leaves_default_chains_alone():
    tables, _desired = live_with_ours()
    result = P.plan(tables, R.desired_state(example_forwards(), 4, prefix='LAB'))
    assert 'KVMNAT' not in result.payload
    assert ':LAB_DNAT - [0:0]' in result.payload


def test_a_plan_of_what_was_applied_is_empty():
    """The saved form is the rendered form: render, take it as the live ruleset, plan again."""
    forwards = F.parse_forwards([
        fwd(guest_ip='2001:db8:0:0:1:0:0:10', host_port='10000:10009', guest_port='10000-10009',
            sources=['2001:DB8:1::/48']),
        fwd(guest='b', guest_ip='192.168.122.11', sources=['198.51.100.7'], host_port=1),
    ], public_ip=PUB, public_ip6='2001:db8:0::10')
    for family in (4, 6):
        desired = R.desired_state(forwards, family)
        live = as_live(K.persist_text(desired, 'nft'))
        again = P.plan(live, desired)
        assert (again.changed, again.reasons) == (False, [])


# ---------------------------------------------------------------- an admin's jump into our chains (issue 11)


@pytest.mark.parametrize('table, chain, spec', [
    ('nat', 'PREROUTING', '-j KVMNAT_DNAT'),
    ('nat', 'PREROUTING', '-i eth0 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'),
    ('nat', 'INPUT', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_DNAT'),
    ('filter', 'FORWARD', '-g KVMNAT_FWD'),
    ('filter', 'OUTPUT', '-m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD'),
    ('nat', 'POSTROUTING', '-s 10.0.0.0/8 -j KVMNAT_SNAT'),
])
def test_a_jump_into_our_chains_that_is_not_ours_is_refused_and_named(table, chain, spec):
    desired = small_desired()
    live = as_live(K.persist_text(desired, 'nft'))
    live.setdefault(table, S.Table(table)).rules.setdefault(chain, []).append(spec)
    with pytest.raises(B.RulesetError) as exc:
        P.plan(live, desired)
    assert 'rule "-A %s %s" in table %s jumps into a kvmnet.nat chain but is not kvmnet.nat\'s own jump' \
        % (chain, spec, table) in str(exc.value)


def test_a_chain_of_our_name_in_another_table_is_not_ours():
    live = S.parse_save('*nat\n:KVMNAT_FWD - [0:0]\n-A PREROUTING -j KVMNAT_FWD\nCOMMIT\n')
    result = P.plan(live, small_desired())
    assert ':KVMNAT_FWD' not in result.payload.split('*nat')[1]     # left alone in nat
