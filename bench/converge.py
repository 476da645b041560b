"""Converge cost: kvmnet.nat.forwards, both firewall backends, against a loop of ansible.builtin.iptables tasks.

    python3 bench/converge.py [--quick] [--reps R] [--sizes N ...] [--nft-sizes N ...] [--out rows.json]

(``bench/run.py`` runs this and bench/dataplane.py and writes bench/results.json and the plot.)

Runs as root, entirely inside two network namespaces this script creates (kvb<pid>-hv for the
iptables backend, kvbn<pid>-hv for the nftables backend) and deletes, also on failure. For each N it
generates N forwards (several guests, tcp and udp, some port ranges, some source lists) and measures,
interleaved (every rep runs each backend's rows once), median of R runs:

  ours_first_s       the module on an empty ruleset (module time: python + iptables-save/restore), called
                     as the role calls it (``return_details: false``), as are all module rows
  ours_noop_s        the same forwards again (nothing to change)
  ours_one_change_s  one forward's guest port changed
  ours_playbook_first_s / ours_playbook_noop_s   the same through ansible-playbook (what a user waits for)
  builtin_first_s / builtin_noop_s   ansible-playbook with the builtin loop (DNAT, FORWARD insert at 1,
                     MASQUERADE: one task each, looped over the forwards), on an empty ruleset / again
  nft_first_s / nft_noop_s / nft_one_change_s   the module with ``backend: nftables``, module time, the
                     same three steps, in a namespace with libvirt's nftables tables as libvirt 11.3
                     writes them (tests/support/nftsets.py) and nothing of ours: before each first run
                     our table is deleted and libvirt's tables loaded again (as they were, without our
                     accept rule)
  floor_s            what Ansible's module code alone costs for the same arguments: a module that only
                     builds AnsibleModule with the forwards module's argument spec (every forward checked
                     against its suboptions) and calls exit_json, echoing the arguments without the
                     forwards as the module does with ``return_details: false``; no module can take less
                     with this interface

The ours_* rows keep the module's default backend (``auto``): their namespace has no libvirt table,
so auto picks iptables, as before the nftables backend existed. The builtin loop is skipped above
N=100 unless --builtin-max says otherwise (about 0.25 s per rule: ~12 minutes a run at N=1000); the
playbook rows above N=1000 unless --playbook-max says otherwise; the results say so instead of
guessing a number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from ansible_collections.kvmnet.nat.tests.support.benchmark import (
    COLL_ROOT, PUBLIC_IP, Namespace, dump, nft_reset, rows_table, run_module, timed)

BUILTIN_MAX_N = 100
PLAYBOOK_MAX_N = 1000
SIZES = (10, 100, 1000, 10000)
NFT_SIZES = (10, 100, 1000, 10000)
QUICK_SIZES = (10, 100)
QUICK_NFT_SIZES = (10, 100, 1000)


def forwards(n, changed=False):
    """N forwards over n//50+2 guests: every 5th udp, every 10th a 10-port range, every 7th allow-listed."""
    guests = n // 50 + 2
    result, port = [], 10000
    for i in range(n):
        ip = '192.168.122.%d' % (10 + i % guests)
        fwd = {'guest': 'g%03d' % (i % guests), 'guest_ip': ip, 'proto': 'udp' if i % 5 == 4 else 'tcp'}
        if i % 10 == 9:
            fwd.update(host_port='%d-%d' % (port, port + 9), guest_port='%d-%d' % (port, port + 9))
            port += 10
        else:
            fwd.update(host_port=port, guest_port=80 + i % 7)
            port += 1
        if i % 7 == 6:
            fwd['sources'] = ['198.51.100.0/24', '192.0.2.%d/32' % (i % 250)]
        result.append(fwd)
    if changed:
        result[0] = dict(result[0], guest_port=8080)
    return result


def playbook(tmp, name, tasks, fwds):
    with open(os.path.join(tmp, 'forwards.json'), 'w') as handle:
        json.dump({'fwds': fwds}, handle)
    path = os.path.join(tmp, name)
    with open(path, 'w') as handle:
        handle.write('- hosts: localhost\n  gather_facts: false\n  vars_files: [forwards.json]\n  tasks:\n' + tasks)
    return path


OURS_TASKS = """
    - kvmnet.nat.forwards:
        public_ip: %s
        forwards: "{{ fwds }}"
        lock_path: "{{ playbook_dir }}/kvmnet-nat.lock"
""" % PUBLIC_IP

# What users write today: one task per rule kind, looped over the forwards.
BUILTIN_TASKS = """
    - ansible.builtin.iptables:
        table: nat
        chain: PREROUTING
        protocol: "{{ item.proto }}"
        destination: %s
        destination_port: "{{ item.host_port | string | replace('-', ':') }}"
        jump: DNAT
        to_destination: "{{ item.guest_ip }}:{{ item.guest_port }}"
        comment: "{{ item.guest }}"
      loop: "{{ fwds }}"
    - ansible.builtin.iptables:
        chain: FORWARD
        action: insert
        rule_num: 1
        protocol: "{{ item.proto }}"
        destination: "{{ item.guest_ip }}"
        destination_port: "{{ item.guest_port | string | replace('-', ':') }}"
        ctstate: [NEW, ESTABLISHED, RELATED]
        jump: ACCEPT
        comment: "{{ item.guest }}"
      loop: "{{ fwds }}"
    - ansible.builtin.iptables:
        table: nat
        chain: POSTROUTING
        protocol: "{{ item.proto }}"
        source: 192.168.122.0/24
        destination: "{{ item.guest_ip }}"
        destination_port: "{{ item.guest_port | string | replace('-', ':') }}"
        jump: MASQUERADE
        comment: "{{ item.guest }}"
      loop: "{{ fwds }}"
""" % PUBLIC_IP


def run_playbook(ns, path):
    playbook_bin = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=COLL_ROOT, ANSIBLE_NOCOLOR='1')
    argv = [playbook_bin, '-i', 'localhost,', '-c', 'local', path, '-e', 'ansible_python_interpreter=%s' % sys.executable]
    elapsed, _out = timed(ns.name, argv, env=env)
    return elapsed


def measure_iptables(ns, tmp, n, add, builtin_max=BUILTIN_MAX_N, playbook_max=PLAYBOOK_MAX_N):
    """One rep of the iptables rows (the module's default backend, auto: iptables in this namespace)."""
    fwds, changed = forwards(n), forwards(n, changed=True)
    ns.flush()
    elapsed, result = run_module(ns, tmp, fwds)
    assert result['changed'] is True, result
    add('ours_first_s', elapsed)
    elapsed, result = run_module(ns, tmp, fwds)
    assert result['changed'] is False, result.get('reasons')
    add('ours_noop_s', elapsed)
    elapsed, result = run_module(ns, tmp, changed)
    assert result['changed'] is True, result
    add('ours_one_change_s', elapsed)
    if n <= playbook_max:
        ns.flush()
        ours_pb = playbook(tmp, 'ours.yml', OURS_TASKS, fwds)
        add('ours_playbook_first_s', run_playbook(ns, ours_pb))
        add('ours_playbook_noop_s', run_playbook(ns, ours_pb))
    if n <= builtin_max:
        ns.flush()
        builtin_pb = playbook(tmp, 'builtin.yml', BUILTIN_TASKS, fwds)
        add('builtin_first_s', run_playbook(ns, builtin_pb))
        add('builtin_noop_s', run_playbook(ns, builtin_pb))


FLOOR = """
from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kvmnet.nat.plugins.modules.forwards import argument_spec
module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
# as the module with return_details: false: the echo of the arguments without the forwards
module.exit_json(changed=False, invocation=dict(module_args=dict((k, v) for k, v in module.params.items() if k != 'forwards')))
"""


def measure_floor(ns, tmp, n, add):
    """Ansible's part of any run of N forwards: parameters in, checked, result out (floor_s)."""
    script = os.path.join(tmp, 'floor.py')
    with open(script, 'w') as handle:
        handle.write(FLOOR)
    path = os.path.join(tmp, 'floor-args.json')
    with open(path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': {'public_ip': PUBLIC_IP, 'forwards': forwards(n), 'return_details': False}}, handle)
    elapsed, _out = timed(ns.name, [sys.executable, script, path], env=dict(os.environ, PYTHONPATH=COLL_ROOT))
    add('floor_s', elapsed)


def measure_nftables(ns, tmp, n, add):
    """One rep of the nftables rows: ``backend: nftables`` on libvirt's nftables tables, nothing of ours."""
    fwds, changed = forwards(n), forwards(n, changed=True)
    nft_reset(ns, 'hv')
    for key, fwd_list, expected in (('nft_first_s', fwds, True), ('nft_noop_s', fwds, False),
                                    ('nft_one_change_s', changed, True)):
        elapsed, result = run_module(ns, tmp, fwd_list, backend='nftables')
        assert result['changed'] is expected and result['backend']['name'] == 'nftables', \
            (key, result.get('msg'), result.get('reasons'))
        add(key, elapsed)


def measure(ns, nft_ns, tmp, n, reps, backends, builtin_max=BUILTIN_MAX_N, playbook_max=PLAYBOOK_MAX_N):
    """The row of N: every rep runs the rows of each backend in ``backends`` once, in its own namespace."""
    samples = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)

    for _rep in range(reps):
        if 'iptables' in backends:
            measure_iptables(ns, tmp, n, add, builtin_max, playbook_max)
        if 'nftables' in backends:
            measure_nftables(nft_ns, tmp, n, add)
        measure_floor(ns, tmp, n, add)
    row = {key: round(statistics.median(values), 3) for key, values in samples.items()}
    row.update(n=n, reps=reps)
    if 'iptables' in backends:
        # module invocations per run follow from the playbooks: one task, or three tasks looped over N
        row.update(ours_module_invocations=1, builtin_module_invocations=3 * n if n <= builtin_max else None)
        if n > builtin_max:
            row.update(builtin_first_s=None, builtin_noop_s=None,
                       builtin_note='not run: about 0.25 s per rule, ~12 min per run at this N')
        if n > playbook_max:
            row.update(ours_playbook_first_s=None, ours_playbook_noop_s=None,
                       ours_playbook_note='not run above N=%d (module time only)' % playbook_max)
        if row.get('builtin_first_s'):
            row['builtin_over_ours_first'] = round(row['builtin_first_s'] / row['ours_playbook_first_s'], 1)
    if 'nftables' in backends:
        row['nft_module_invocations'] = 1
        if row.get('ours_first_s'):
            for step in ('first', 'noop', 'one_change'):
                row['iptables_over_nft_%s' % step] = round(row['ours_%s_s' % step] / row['nft_%s_s' % step], 2)
    return row


def table(rows):
    """Both backends side by side (module time), then the playbooks and the builtin loop."""
    return rows_table([('N', 'n'), ('Ansible floor', 'floor_s'), ('iptables first', 'ours_first_s'), ('nftables first', 'nft_first_s'),
                       ('iptables no-op', 'ours_noop_s'), ('nftables no-op', 'nft_noop_s'),
                       ('iptables 1 change', 'ours_one_change_s'), ('nftables 1 change', 'nft_one_change_s'),
                       ('ours playbook first', 'ours_playbook_first_s'),
                       ('ours playbook no-op', 'ours_playbook_noop_s'), ('builtin first', 'builtin_first_s'),
                       ('builtin no-op', 'builtin_noop_s'), ('builtin/ours first', 'builtin_over_ours_first')], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='iptables N = 10 and 100, nftables 10, 100 and 1000, one run each')
    parser.add_argument('--reps', type=int)
    parser.add_argument('--sizes', type=int, nargs='*', help='iptables backend, instead of %s' % ' '.join(map(str, SIZES)))
    parser.add_argument('--nft-sizes', type=int, nargs='*',
                        help='nftables backend, instead of %s' % ' '.join(map(str, NFT_SIZES)))
    parser.add_argument('--out', help='write the rows as JSON here')
    parser.add_argument('--builtin-max', type=int, default=BUILTIN_MAX_N,
                        help='run the builtin loop up to this N (default %(default)s; N = 1000 takes ~25 min a rep)')
    parser.add_argument('--playbook-max', type=int, default=PLAYBOOK_MAX_N,
                        help='run ours through ansible-playbook up to this N (default %(default)s)')
    args = parser.parse_args()
    sizes = args.sizes if args.sizes is not None else (QUICK_SIZES if args.quick else SIZES)
    nft_sizes = args.nft_sizes if args.nft_sizes is not None else (QUICK_NFT_SIZES if args.quick else NFT_SIZES)
    rows = run(sizes, args.reps or (1 if args.quick else 3), builtin_max=args.builtin_max, nft_sizes=nft_sizes,
               playbook_max=args.playbook_max)
    print(table(rows))
    dump(args.out, rows)


def run(sizes, reps, builtin_max=BUILTIN_MAX_N, nft_sizes=(), playbook_max=PLAYBOOK_MAX_N):
    """Rows for every N of ``sizes`` (iptables backend) and ``nft_sizes`` (nftables backend), ascending."""
    rows = []
    with Namespace() as ns, Namespace('kvbn%d' % os.getpid()) as nft_ns, tempfile.TemporaryDirectory() as tmp:
        for n in sorted(set(sizes) | set(nft_sizes)):
            backends = [name for name, of in (('iptables', sizes), ('nftables', nft_sizes)) if n in of]
            print('converge N=%d (%s) ...' % (n, ', '.join(backends)), flush=True)
            rows.append(measure(ns, nft_ns, tmp, n, reps, backends, builtin_max, playbook_max))
    return rows


if __name__ == '__main__':
    main()
