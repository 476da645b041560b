# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Hostile input, concurrent runs and the restore path, against real netfilter (issue 11).

Needs root; everything happens in the lab's namespaces (see netlab.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest

from ansible_collections.kvmnet.nat.tests.support.topology import sh

from conftest import chain_rules
from netlab import BRIDGE_IP, CLIENT_IP, HERE, PUBLIC_IP, PUBLIC_IP6

WEB = {'guest': 'web01', 'guest_ip': '192.168.122.10', 'host_port': 8080, 'guest_port': 80}
WEB6 = {'guest': 'web01', 'guest_ip': '2001:db8:122::10', 'host_port': 8080, 'guest_port': 80}
DNS = {'guest': 'dns01', 'guest_ip': '192.168.122.11', 'proto': 'udp', 'host_port': 5353, 'guest_port': 53}
PARAMS = {'public_ip': PUBLIC_IP, 'public_ip6': PUBLIC_IP6, 'forwards': [WEB, WEB6, DNS]}
JUMPS = {('nat', 'PREROUTING'): 'KVMNAT_DNAT', ('nat', 'OUTPUT'): 'KVMNAT_DNAT',
         ('nat', 'POSTROUTING'): 'KVMNAT_SNAT', ('filter', 'FORWARD'): 'KVMNAT_FWD'}


def ours_first_once(save):
    """Each of our four jumps exactly once, at position 1."""
    for (table, chain), target in JUMPS.items():
        rules = chain_rules(save, table, chain)
        if not rules or not rules[0].endswith('-j ' + target) or sum(r.endswith('-j ' + target) for r in rules) != 1:
            return False
    return True


@pytest.fixture
def applied(lab, tmp_path):
    base = str(tmp_path / 'kvmnet-nat')
    result = lab.module(dict(PARAMS, persist_path=base))
    assert not result.get('failed'), result.get('msg')
    lab.base = base
    return result


# ---------------------------------------------------------------- injection

INJECTIONS = [
    {'public_ip6': '2001:db8::10%1\n-F\n#'},
    {'public_ip6': '2001:db8::10%1\nCOMMIT\n*filter\n-F\nCOMMIT\n*nat\n#'},
    {'forwards': [dict(WEB6, public_ip='2001:db8::10%eth0\n-F\n#')]},
    {'forwards': [dict(WEB, sources=['198.51.100.0/24\n-F\n#'])]},
    {'forwards': [dict(WEB6, sources=['2001:db8::%1\n-X\n#/64'])]},
    {'forwards': [dict(WEB, guest='web01\n-F')]},
    {'in_interface': 'eth0\n-F'},
    {'chain_prefix': 'KVMNAT\n-F'},
]


@pytest.mark.parametrize('check', [False, True], ids=['apply', 'check'])
@pytest.mark.parametrize('params', INJECTIONS, ids=range(len(INJECTIONS)))
def test_injections_are_refused_and_every_rule_stays_byte_identical(lab, applied, params, check):
    before = {4: lab.save(4), 6: lab.save(6)}
    result = lab.module(dict(PARAMS, **params), check=check)
    assert result.get('failed') is True and 'nothing was changed' in result['msg'], result
    assert result.get('changed') is not True
    assert {4: lab.save(4), 6: lab.save(6)} == before         # libvirt's rules and ours, both families


# ---------------------------------------------------------------- hairpin behind a tree of 'always' forwards

def test_hairpin_works_behind_a_tree_of_always_forwards_with_bridge_netfilter_off(lab):
    assert lab.x('hv', 'sh', '-c', 'cat /proc/sys/net/bridge/bridge-nf-call-iptables 2>/dev/null || echo 0'
                 ).stdout.strip() == '0'
    # 12 'always' forwards on ports around web01's 'auto' one: the first forward is an 'always' one, so
    # their tree comes first in KVMNAT_SNAT and covers port 30006 too
    always = [{'guest': 'filler%d' % i, 'guest_ip': '192.168.122.%d' % (60 + i), 'host_port': 30000 + i,
               'guest_port': 80, 'masquerade': 'always'} for i in range(13) if i != 6]
    result = lab.module({'public_ip': PUBLIC_IP, 'forwards': always + [dict(WEB, host_port=30006)]})
    assert not result.get('failed'), result.get('msg')
    assert any(':KVMNAT_SNAT_' in line for line in result['rules']['ipv4'])       # the tree is there
    lab.settle()
    assert lab.probe('tcp', PUBLIC_IP, 30006, role='dns01') == 'web01 %s 80' % BRIDGE_IP   # hairpin, masqueraded
    assert lab.probe('tcp', PUBLIC_IP, 30006) == 'web01 %s 80' % CLIENT_IP                 # outside: not
    lab.module({'state': 'absent'})


# ---------------------------------------------------------------- concurrent runs

def _start(cmd, env=None):
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **(env or {})))


def test_ten_concurrent_pairs_always_end_in_one_desired_state_with_four_jumps(lab, tmp_path):
    other = dict(PARAMS, forwards=[dict(WEB, host_port=9090), DNS])
    base = str(tmp_path / 'kvmnet-nat')
    script = lab.restore_script(__expose_rules_base=base)
    outcomes = []
    for pair in range(10):
        lab.module({'state': 'absent'})                       # both runs see every jump missing
        if pair % 2 == 0:                                     # two playbooks at once
            procs = [_start(lab.module_cmd(PARAMS)), _start(lab.module_cmd(other))]
        else:                                                 # a playbook and the libvirt hook at once
            lab.module(dict(PARAMS, persist_path=base))
            lab.x('hv', script, 'flush')
            procs = [_start(lab.module_cmd(PARAMS)), _start(['ip', 'netns', 'exec', lab.ns['hv'], script])]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            results.append((proc.returncode, out, err))
        for rc, out, err in results[:1] + (results[1:] if pair % 2 == 0 else []):
            assert not lab.result(rc, out, err).get('failed'), out
        if pair % 2:
            assert results[1][0] == 0, results[1][2]
        save = lab.save(4)
        assert ours_first_once(save), save
        settled = [lab.module(p, check=True)['changed'] for p in (PARAMS, other)]
        assert settled.count(False) == 1, (pair, settled)      # exactly one of the desired states
        outcomes.append(settled.index(False))
    lab.module({'state': 'absent'})


# ---------------------------------------------------------------- the restore script

def _with_sum(header, body):
    """A persisted file whose checksum matches its (possibly hostile) body."""
    first, meta = header.splitlines()[:2]
    meta = meta.rsplit('sha256=', 1)[0] + 'sha256=' + hashlib.sha256(body.encode()).hexdigest()
    return '%s\n%s\n%s' % (first, meta, body)


def _corrupt(text, how, tmp_path):
    header, body = '\n'.join(text.splitlines()[:2]) + '\n', text.split('\n', 2)[2]
    if how == 'bad rule':
        return _with_sum(header, body.replace('--dport 8080', '--dport 8080 --bogus-option 1', 1))
    if how == 'cut short':
        cut = text.index('-I PREROUTING 1 ') + 20
        return text[:cut]
    if how == 'edited':
        return text.replace('--dport 8080', '--dport 8081', 1)
    if how == 'command substitution':
        marker = tmp_path / 'pwned'
        return _with_sum(header, body.replace('-A KVMNAT_DNAT ', '-A KVMNAT_DNAT $(touch %s) ' % marker, 1))
    if how == 'foreign line':
        return _with_sum(header, body.replace('COMMIT', '-A LIBVIRT_FWI -j ACCEPT\nCOMMIT', 1))
    if how == 'flush line':
        return _with_sum(header, body.replace('COMMIT', '-F FORWARD\nCOMMIT', 1))
    if how == 'no header':
        return body
    if how == 'other family':
        return _with_sum(header.replace('family=4', 'family=6'), body)
    raise AssertionError(how)


CORRUPTIONS = ['bad rule', 'cut short', 'edited', 'command substitution', 'foreign line', 'flush line', 'no header',
               'other family']


@pytest.mark.parametrize('how', CORRUPTIONS)
def test_restore_script_fed_a_corrupt_file_changes_nothing(lab, applied, tmp_path, how):
    # something for the script to do: a foreign rule pushed our jump down, and a chain of ours emptied
    lab.x('hv', lab.ipt(4), '-I', 'FORWARD', '1', '-s', '192.0.2.66', '-j', 'DROP')
    lab.x('hv', lab.ipt(4), '-t', 'nat', '-F', 'KVMNAT_SNAT')
    path = lab.base + '.v4'
    with open(path) as handle:
        good = handle.read()
    with open(path, 'w') as handle:
        handle.write(_corrupt(good, how, tmp_path))
    before = {4: lab.save(4), 6: lab.save(6)}
    script = lab.restore_script(__expose_rules_base=lab.base)
    proc = sh('ip', 'netns', 'exec', lab.ns['hv'], script, check=False)
    assert proc.returncode == 1, proc.stderr
    assert {4: lab.save(4), 6: lab.save(6)} == before, proc.stderr
    assert not (tmp_path / 'pwned').exists()
    with open(path, 'w') as handle:
        handle.write(good)
    lab.x('hv', lab.ipt(4), '-D', 'FORWARD', '-s', '192.0.2.66', '-j', 'DROP')
    assert lab.module(dict(PARAMS, persist_path=lab.base))['changed'] is True   # the module mends the chain


def _logging_tools(lab, tmp_path):
    """A PATH directory whose *-restore tools log their input, then run the real ones."""
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    log = tmp_path / 'restore.log'
    for family in ('iptables', 'ip6tables'):
        name = '%s-%s-restore' % (family, lab.flavour)
        real = sh('sh', '-c', 'command -v ' + name).stdout.strip()
        (bindir / name).write_text('#!/bin/sh\nin=$(cat)\nprintf "== %%s\\n%%s\\n" "%s $*" "$in" >>%s\n'
                                   'printf "%%s\\n" "$in" | %s "$@"\n' % (name, log, real))
        (bindir / name).chmod(0o755)
    return bindir, log


def test_restore_script_changes_nothing_when_nothing_moved_and_moves_only_what_moved(lab, applied, tmp_path):
    bindir, log = _logging_tools(lab, tmp_path)
    script = lab.restore_script(__expose_rules_base=lab.base)
    env = ['env', 'PATH=%s:%s' % (bindir, os.environ['PATH'])]
    lab.x('hv', *env, script, 'start')
    assert not log.exists(), log.read_text()                  # nothing moved: no restore at all, no -D
    # a foreign rule above our FORWARD jump, and one rule of ours missing in KVMNAT_DNAT
    lab.x('hv', lab.ipt(4), '-I', 'FORWARD', '1', '-s', '192.0.2.66', '-j', 'DROP')
    lab.x('hv', lab.ipt(4), '-t', 'nat', '-D', 'KVMNAT_DNAT', '1')
    lab.x('hv', *env, script, 'start')
    calls = log.read_text().split('== ')[1:]
    assert [c.splitlines()[0] for c in calls] == [
        '%s-%s-restore --noflush --wait 30 --test' % ('iptables', lab.flavour),
        '%s-%s-restore --noflush --wait 30' % ('iptables', lab.flavour)]
    payload = calls[1].splitlines()[1:]
    assert [line for line in payload if line.startswith((':', '-D', '-I', '*'))] == [
        '*filter', '-D FORWARD -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD',
        '-I FORWARD 1 -m comment --comment "kvmnet.nat: jump" -j KVMNAT_FWD',
        '*nat', ':KVMNAT_DNAT - [0:0]']                         # only the chain that differed
    save = lab.save(4)
    assert ours_first_once(save)
    assert chain_rules(save, 'filter', 'FORWARD')[1] == '-A FORWARD -s 192.0.2.66/32 -j DROP'
    assert lab.module(dict(PARAMS, persist_path=lab.base))['changed'] is False
    lab.x('hv', lab.ipt(4), '-D', 'FORWARD', '-s', '192.0.2.66', '-j', 'DROP')


def test_restore_script_uses_the_flavour_the_rules_were_applied_with(lab, applied, tmp_path):
    """Generic iptables pointing at the other flavour must not lead the script astray."""
    other = 'legacy' if lab.flavour == 'nft' else 'nft'
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for family in ('iptables', 'ip6tables'):
        for suffix in ('', '-save', '-restore'):
            real = sh('sh', '-c', 'command -v %s-%s%s' % (family, other, suffix)).stdout.strip()
            (bindir / (family + suffix)).symlink_to(real)
    script = lab.restore_script(__expose_rules_base=lab.base)
    env = ['env', 'PATH=%s:%s' % (bindir, os.environ['PATH'])]
    lab.x('hv', *env, script, 'flush')
    assert 'KVMNAT' not in lab.save(4) and 'KVMNAT' not in lab.save(6)
    lab.x('hv', *env, script, 'start')
    assert ours_first_once(lab.save(4))
    for family in ('iptables', 'ip6tables'):
        assert 'KVMNAT' not in lab.x('hv', '%s-%s-save' % (family, other)).stdout
    assert lab.module(dict(PARAMS, persist_path=lab.base))['changed'] is False     # no "rules in both"


# ---------------------------------------------------------------- convergence with real iptables

def test_random_forward_sets_converge_with_real_iptables(lab):
    proc = lab.x('hv', 'env', 'PYTHONPATH=' + lab.collections_path, sys.executable,
                 os.path.join(HERE, 'converge_fuzz.py'), lab.flavour, '17', '400', '40', timeout=120)
    report = json.loads(proc.stdout)
    assert report['runs'] > 50 and report['failed'] == 0, report
    for family in (4, 6):
        assert 'KVMNAT' not in lab.save(family)


# ---------------------------------------------------------------- libvirt-switch-backend

VIRSH_STUB = r'''#!/bin/sh
# a stand-in for virsh: domains with spaces in their names, one network
while [ $# -gt 0 ]; do case $1 in -q) shift ;; -c) shift 2 ;; *) break ;; esac; done
cmd=$1; shift
case $cmd in
  version) echo "stub" ;;
  list) printf 'web one\nplain\n' ;;
  domiflist)
    [ "$1" = --domain ] || exit 1
    case $2 in
      "web one") printf 'vnet-a   network   default   virtio   52:54:00:00:00:01\n' ;;
      plain) printf 'vnet-b   network   default   virtio   52:54:00:00:00:02\n%s\n' "${EXTRA_TAP:-}" ;;
      *) echo "error: no domain '$2'" >&2; exit 1 ;;
    esac ;;
  net-list) echo default ;;
  net-destroy|net-start) [ "$1 $2" = "--network default" ] || exit 1; echo "$cmd $2" >>"$STUB_LOG" ;;
  net-info) printf 'Name:           default\nBridge:         virbr0\n' ;;
  *) echo "unexpected: $cmd" >&2; exit 1 ;;
esac
'''
SYSTEMCTL_STUB = '#!/bin/sh\nexit 3\n'


@pytest.mark.parametrize('extra_tap, rc, switched', [
    ('', 0, True),
    ('vnet-gone   network   default   virtio   52:54:00:00:00:03', 1, False),
])
def test_switch_backend_reattaches_guests_whose_names_have_spaces(lab, tmp_path, extra_tap, rc, switched):
    bindir = tmp_path / 'bin'
    bindir.mkdir()
    for name, text in (('virsh', VIRSH_STUB), ('systemctl', SYSTEMCTL_STUB)):
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    for tap in ('vnet-a', 'vnet-b'):
        lab.x('hv', 'ip', 'link', 'add', tap, 'type', 'veth', 'peer', 'name', tap + 'p')
    try:
        script = lab.script('libvirt-switch-backend.sh.j2')
        proc = sh('ip', 'netns', 'exec', lab.ns['hv'], 'env', 'PATH=%s:%s' % (bindir, os.environ['PATH']),
                  'STUB_LOG=%s' % (tmp_path / 'stub.log'), 'EXTRA_TAP=' + extra_tap, 'sh', script, check=False)
        assert proc.returncode == rc, proc.stderr
        assert ('switched' in proc.stdout) is switched
        for tap in ('vnet-a', 'vnet-b'):
            assert 'master virbr0' in lab.x('hv', 'ip', 'link', 'show', tap).stdout
        if extra_tap:
            assert 'could not re-attach vnet-gone to network default' in proc.stderr
    finally:
        for tap in ('vnet-a', 'vnet-b'):
            lab.x('hv', 'ip', 'link', 'del', tap, check=False)


def test_an_admins_jump_into_our_chains_is_refused_by_name_and_kept(lab, applied):
    lab.x('hv', lab.ipt(4), '-t', 'nat', '-A', 'PREROUTING', '-i', 'eth0', '-j', 'KVMNAT_DNAT')
    try:
        before = lab.save(4)
        result = lab.module(PARAMS)
        assert result.get('failed') is True
        assert 'rule "-A PREROUTING -i eth0 -j KVMNAT_DNAT" in table nat jumps into a kvmnet.nat chain but is not ' \
               "kvmnet.nat's own jump" in result['msg']
        assert lab.save(4) == before
    finally:
        lab.x('hv', lab.ipt(4), '-t', 'nat', '-D', 'PREROUTING', '-i', 'eth0', '-j', 'KVMNAT_DNAT')
