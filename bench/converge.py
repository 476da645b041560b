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
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# the namespaces are built the one way the tests build them; the dataplane walks rules as they do
sys.path[:0] = [os.path.join(REPO, 'tests', 'netns'), os.path.join(REPO, 'tests', 'unit', 'plugins', 'module_utils')]
from topology import Topology  # noqa: E402
COLL_ROOT = os.environ.get('ANSIBLE_COLLECTIONS_PATH', '/var/tmp/kvmnet-nat-build/collections').split(':')[0]
sys.path.append(COLL_ROOT)    # the collection make copies there: rulewalk (the tests' walker) imports its _walk
PUBLIC_IP = '203.0.113.10'
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


class Namespace(Topology):
    """The hypervisor's namespace (tests/netns/topology.py), with a public veth and libvirt's bridge."""

    def __init__(self):
        super().__init__('kvb%d' % os.getpid(), ('hv',))
        self.name = self.ns['hv']

    def up(self):
        super().up()
        try:
            for cmd in ('ip link add pub0 type veth peer name pub1', 'ip addr add %s/24 dev pub0' % PUBLIC_IP,
                        'ip link set pub0 up', 'ip link set pub1 up', 'ip link add virbr0 type bridge',
                        'ip addr add 192.168.122.1/24 dev virbr0', 'ip link set virbr0 up'):
                self.run('hv', cmd)
        except BaseException:
            self.down()
            raise
        return self

    def flush(self):
        for tool in ('iptables', 'ip6tables'):
            for table in ('filter', 'nat'):
                self.run('hv', '%s -t %s -F' % (tool, table))
                self.run('hv', '%s -t %s -X' % (tool, table))


def timed(ns, argv, env=None):
    """Run ``argv`` in network namespace ``ns``; (seconds, stdout); fail loudly."""
    start = time.monotonic()
    proc = subprocess.run(['ip', 'netns', 'exec', ns] + argv, capture_output=True, text=True, check=False, env=env)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError('%s failed: %s %s' % (argv[:3], proc.stdout[-2000:], proc.stderr[-2000:]))
    return elapsed, proc.stdout


def run_module(ns, tmp, fwds, coll_root=COLL_ROOT):
    """The forwards module as Ansible runs it (its JSON arguments in a file), in namespace ``ns.name``.

    The module of this checkout takes its host lock in ``tmp`` (never /run on this machine); an older
    revision measured for comparison has no lock and no such option.
    """
    path = os.path.join(tmp, 'args.json')
    args = {'public_ip': PUBLIC_IP, 'forwards': fwds}
    if coll_root == COLL_ROOT:
        args['lock_path'] = os.path.join(tmp, 'kvmnet-nat.lock')
    with open(path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    env = dict(os.environ, PYTHONPATH=coll_root)
    module = os.path.join(coll_root, 'ansible_collections', 'kvmnet', 'nat', 'plugins', 'modules', 'forwards.py')
    elapsed, out = timed(ns.name, [sys.executable, module, path], env=env)
    return elapsed, json.loads(out)


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


def aligned(lines):
    """Lines of cells as a Markdown-style table, columns right-aligned."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    return '\n'.join('| ' + ' | '.join(c.rjust(w) for c, w in zip(line, widths)) + ' |' for line in lines)


def rows_table(cols, rows):
    """[(title, key)] and rows (dicts) -> aligned table; '-' for what was not measured."""
    return aligned([[title for title, _key in cols]] +
                   [['-' if row.get(key) is None else str(row[key]) for _title, key in cols] for row in rows])


def dump(path, rows):
    if path:
        with open(path, 'w') as handle:
            json.dump(rows, handle, indent=2)


def sizes_main(doc, default_sizes, measure, table_of):
    """The command line of a benchmark run over sizes: ``--sizes``, ``--reps`` and ``--out``; measures,
    prints the table and writes the rows."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=list(default_sizes))
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args()
    rows = measure(args.sizes, args.reps)
    print(table_of(rows))
    dump(args.out, rows)


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
