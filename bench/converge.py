"""Converge cost: kvmnet.nat.forwards against a loop of ansible.builtin.iptables tasks.

    python3 bench/converge.py [--quick] [--reps R] [--sizes N ...] [--out rows.json]

(``bench/run.py`` runs this and bench/dataplane.py and writes bench/results.json and the plot.)

Runs as root, entirely inside a network namespace this script creates (kvb<pid>) and deletes,
also on failure. For each N it generates N forwards (several guests, tcp and udp, some port
ranges, some source lists) and measures, interleaved, median of R runs:

  ours_first_s       the module on an empty ruleset (module time: python + iptables-save/restore)
  ours_noop_s        the same forwards again (nothing to change)
  ours_one_change_s  one forward's guest port changed
  ours_playbook_first_s / ours_playbook_noop_s   the same through ansible-playbook (what a user waits for)
  builtin_first_s / builtin_noop_s   ansible-playbook with the builtin loop (DNAT, FORWARD insert at 1,
                     MASQUERADE: one task each, looped over the forwards), on an empty ruleset / again

The builtin loop is skipped above N=100 unless --builtin-max says otherwise (about 0.25 s per
rule: ~12 minutes a run at N=1000); the results say so instead of guessing a number.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from ansible_collections.kvmnet.nat.tests.support.benchmark import (
    COLL_ROOT, PUBLIC_IP, Namespace, dump, rows_table, run_module, timed)

BUILTIN_MAX_N = 100


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


def measure(ns, tmp, n, reps, builtin_max=BUILTIN_MAX_N):
    samples = {}

    def add(key, value):
        samples.setdefault(key, []).append(value)

    fwds, changed = forwards(n), forwards(n, changed=True)
    ours_pb = playbook(tmp, 'ours.yml', OURS_TASKS, fwds)
    for _rep in range(reps):
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
        ns.flush()
        add('ours_playbook_first_s', run_playbook(ns, ours_pb))
        add('ours_playbook_noop_s', run_playbook(ns, ours_pb))
        if n <= builtin_max:
            ns.flush()
            builtin_pb = playbook(tmp, 'builtin.yml', BUILTIN_TASKS, fwds)
            add('builtin_first_s', run_playbook(ns, builtin_pb))
            add('builtin_noop_s', run_playbook(ns, builtin_pb))
    row = {key: round(statistics.median(values), 3) for key, values in samples.items()}
    # module invocations per run follow from the playbooks: one task, or three tasks looped over N
    row.update(n=n, reps=reps, ours_module_invocations=1,
               builtin_module_invocations=3 * n if n <= builtin_max else None)
    if n > builtin_max:
        row.update(builtin_first_s=None, builtin_noop_s=None,
                   builtin_note='not run: about 0.25 s per rule, ~12 min per run at this N')
    if row.get('builtin_first_s'):
        row['builtin_over_ours_first'] = round(row['builtin_first_s'] / row['ours_playbook_first_s'], 1)
    return row


def table(rows):
    return rows_table([('N', 'n'), ('ours first', 'ours_first_s'), ('ours no-op', 'ours_noop_s'),
                       ('ours 1 change', 'ours_one_change_s'), ('ours playbook first', 'ours_playbook_first_s'),
                       ('ours playbook no-op', 'ours_playbook_noop_s'), ('builtin first', 'builtin_first_s'),
                       ('builtin no-op', 'builtin_noop_s'), ('builtin/ours first', 'builtin_over_ours_first')], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='N = 10 and 100, one run each')
    parser.add_argument('--reps', type=int)
    parser.add_argument('--sizes', type=int, nargs='+', help='instead of 10 100 1000')
    parser.add_argument('--out', help='write the rows as JSON here')
    parser.add_argument('--builtin-max', type=int, default=BUILTIN_MAX_N,
                        help='run the builtin loop up to this N (default %(default)s; N = 1000 takes ~25 min a rep)')
    args = parser.parse_args()
    rows = run(args.sizes or ((10, 100) if args.quick else (10, 100, 1000)), args.reps or (1 if args.quick else 3),
               builtin_max=args.builtin_max)
    print(table(rows))
    dump(args.out, rows)


def run(sizes, reps, builtin_max=BUILTIN_MAX_N):
    rows = []
    with Namespace() as ns, tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            print('converge N=%d ...' % n, flush=True)
            rows.append(measure(ns, tmp, n, reps, builtin_max))
    return rows


if __name__ == '__main__':
    main()
