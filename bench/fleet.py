"""The role across a fleet: kvmnet.nat.expose on 1, 4 and 8 lab hypervisors at once, over ssh.

    python3 bench/fleet.py [--sizes 1 4 8] [--forwards 100] [--reps 3] [--forks 8] [--out rows.json]

Brings up one lab of its own (``tests/lab/lab.py --name kvfleet``) with as many Debian 12 hypervisors
as the largest size, each with libvirt and its default network but no guest VM (``--no-guests``): the
forwards point at declared addresses, so nothing is looked up, and the cost measured is the role's,
not TCG's. Each hypervisor gets N forwards over four guests. Times ``ansible-playbook`` end to end,
interleaved, median of R:

  fleet_first_s    the role after ``expose_state: absent`` (iptables-persistent installed already)
  fleet_noop_s     the same inventory again (nothing to do)
  minimal_s        a playbook that gathers facts and runs one command, on the same hosts
  one_call_s       a playbook of one task, kvmnet.nat.host_info, no facts: the least a role that
                   reads each host can do, to show how the machine itself scales with hosts
  noop_controller_cpu_s  CPU seconds (user + system) of the no-op's ansible-playbook, its workers
                   and their ssh clients: the controller's share; the hypervisors' is not in it

with ``-f FORKS``. The first run on the fresh hypervisors (package install) is run once, not timed.
The lab goes down at the end, also on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

from ansible_collections.kvmnet.nat.tests.support import benchmark

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

LAB_NAME = 'kvfleet'
LAB = [sys.executable, os.path.join(REPO, 'tests', 'lab', 'lab.py'), '--name', LAB_NAME]
STATE = os.path.join(os.environ.get('KVMLAB_STATE', '/var/tmp/kvmnet-lab'), LAB_NAME)
MINIMAL = """- hosts: "{{ target }}"
  gather_facts: true
  tasks:
    - ansible.builtin.command: "true"
      changed_when: false
"""
ONE_CALL = """- hosts: "{{ target }}"
  gather_facts: false
  tasks:
    - kvmnet.nat.host_info:
"""


def inventory(tmp, hypervisors, sizes, n):
    """hv1..hvK, each with N forwards to four declared guests; groups fleetK for every size."""
    hosts = {}
    for index in range(1, hypervisors + 1):
        guests = [{'name': 'g%d' % g, 'ip': '192.168.122.%d' % (10 + g), 'ports': []} for g in range(4)]
        for i in range(n):
            port = {'host': 10000 + i, 'guest': 80 + i % 7}
            if i % 5 == 4:
                port['proto'] = 'udp'
            guests[i % 4]['ports'].append(port)
        hosts['hv%d' % index] = {'expose_public_ip': '203.0.113.%d' % (10 + index), 'expose_guests': guests}
    groups = {'fleet%d' % size: {'hosts': {'hv%d' % i: {} for i in range(1, size + 1)}} for size in sizes}
    path = os.path.join(tmp, 'fleet.json')
    with open(path, 'w') as handle:
        json.dump(dict({'hypervisors': {'hosts': hosts}}, **groups), handle)
    return path


def playbook(fleet, name, forks, extra=()):
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', os.path.join(STATE, 'hosts.json'),
            '-i', fleet, '-f', str(forks), name] + list(extra)
    start, before = time.monotonic(), os.times()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=dict(os.environ, ANSIBLE_NOCOLOR='1'))
    elapsed, after = time.monotonic() - start, os.times()
    if proc.returncode != 0:
        raise RuntimeError('%s failed:\n%s\n%s' % (name, proc.stdout[-3000:], proc.stderr[-2000:]))
    changed = sum(int(c) for c in re.findall(r'changed=(\d+)', proc.stdout))
    # the controller's CPU: ansible-playbook, its workers and their ssh clients (all waited for)
    cpu = (after.children_user + after.children_system) - (before.children_user + before.children_system)
    return elapsed, changed, cpu


def measure(sizes, n, reps, forks):
    rows = []
    biggest = max(sizes)
    subprocess.run(LAB + ['up', '--no-guests'] + ['--hv=hv%d:bookworm' % i for i in range(1, biggest + 1)], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fleet = inventory(tmp, biggest, sizes, n)
            minimal, one_call = os.path.join(tmp, 'minimal.yml'), os.path.join(tmp, 'one-call.yml')
            for path, text in ((minimal, MINIMAL), (one_call, ONE_CALL)):
                with open(path, 'w') as handle:
                    handle.write(text)
            playbook(fleet, 'kvmnet.nat.expose', forks, ['-e', 'target=fleet%d' % biggest])   # fresh: packages
            samples = {size: {} for size in sizes}
            for _rep in range(reps):
                for size in sizes:                            # interleaved: each size once per round
                    print('fleet: %d hypervisor(s), N=%d ...' % (size, n), flush=True)
                    target = ['-e', 'target=fleet%d' % size]
                    playbook(fleet, 'kvmnet.nat.expose', forks, target + ['-e', 'expose_state=absent'])
                    elapsed, _changed, _cpu = playbook(fleet, 'kvmnet.nat.expose', forks, target)
                    samples[size].setdefault('fleet_first_s', []).append(elapsed)
                    elapsed, changed, cpu = playbook(fleet, 'kvmnet.nat.expose', forks, target)
                    assert changed == 0, 'the no-op run changed %d tasks' % changed
                    samples[size].setdefault('fleet_noop_s', []).append(elapsed)
                    samples[size].setdefault('noop_controller_cpu_s', []).append(cpu)
                    samples[size].setdefault('minimal_s', []).append(playbook(fleet, minimal, forks, target)[0])
                    samples[size].setdefault('one_call_s', []).append(playbook(fleet, one_call, forks, target)[0])
            for size in sizes:
                row = {key: round(statistics.median(values), 3) for key, values in samples[size].items()}
                row.update(hypervisors=size, n=n, forks=forks, fleet_reps=reps)
                rows.append(row)
    finally:
        subprocess.run(LAB + ['down'], check=False)
    one = next(r for r in rows if r['hypervisors'] == min(sizes))
    for row in rows:
        row['noop_vs_one'] = round(row['fleet_noop_s'] / one['fleet_noop_s'], 2)
        row['noop_vs_minimal'] = round(row['fleet_noop_s'] / row['minimal_s'], 2)
        row['minimal_vs_one'] = round(row['minimal_s'] / one['minimal_s'], 2)
        row['one_call_vs_one'] = round(row['one_call_s'] / one['one_call_s'], 2)
    return rows


def table(rows):
    return benchmark.rows_table([('hypervisors', 'hypervisors'), ('N each', 'n'), ('role first', 'fleet_first_s'),
                                 ('role no-op', 'fleet_noop_s'), ('minimal playbook', 'minimal_s'),
                                 ('one call', 'one_call_s'), ('no-op / 1 hypervisor', 'noop_vs_one'),
                                 ('minimal / 1 hypervisor', 'minimal_vs_one'), ('one call / 1 hypervisor', 'one_call_vs_one'),
                                 ('no-op / minimal', 'noop_vs_minimal'), ('no-op controller CPU', 'noop_controller_cpu_s')],
                                rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[1, 4, 8])
    parser.add_argument('--forwards', type=int, default=100)
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--forks', type=int, default=8)
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args()
    rows = measure(args.sizes, args.forwards, args.reps, args.forks)
    print(table(rows))
    benchmark.dump(args.out, rows)


if __name__ == '__main__':
    main()
