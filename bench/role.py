"""Converge cost of the kvmnet.nat.expose role on a lab hypervisor, over ssh, as an admin runs it.

    python3 bench/role.py [--sizes N ...] [--reps R] [--out rows.json]

Brings up a lab of its own (``tests/lab/lab.py --name kvbench``: one Debian 12 hypervisor with
libvirt and its two guests, inside namespaces; see the README, "The lab"), declares N ports on the
guests web01 and app01 (every 5th udp; app01's address looked up in libvirt), and times
``ansible-playbook kvmnet.nat.expose``:

  role_fresh_host_s   the very first run on the fresh hypervisor (installs iptables-persistent
                      from the lab's apt repository, hooks, sysctl): once, at the first N
  role_first_s        after ``expose_state: absent`` (packages already there), median of R
  role_noop_s         the same inventory again
  role_one_change_s   one port's guest port changed
  role_tasks          tasks that ran (ok + changed in the recap) on a no-op run
  minimal_s           a playbook that gathers facts and runs one command on the same hypervisor,
                      interleaved with the role's runs (the reference of the ratios below)
  noop_vs_minimal     role_noop_s / minimal_s; first_vs_minimal: role_first_s / minimal_s

The lab goes down at the end, also on failure; ``lab.py down`` checks the machine's own
namespace is as before.
"""

from __future__ import annotations

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

LAB_NAME = 'kvbench'
LAB = [sys.executable, os.path.join(REPO, 'tests', 'lab', 'lab.py'), '--name', LAB_NAME]
STATE = os.path.join(os.environ.get('KVMLAB_STATE', '/var/tmp/kvmnet-lab'), LAB_NAME)


def host_vars(n, changed=False):
    """N ports over web01 and app01: host ports 10000.., guest ports 80..86, every 5th udp."""
    ports = []
    for i in range(n):
        port = {'host': 10000 + i, 'guest': 80 + i % 7}
        if i % 5 == 4:
            port['proto'] = 'udp'
        ports.append(port)
    if changed:
        ports[0] = dict(ports[0], guest=8080)
    return {'expose_guests': [{'name': 'web01', 'ip': '192.168.122.10', 'ports': ports[0::2]},
                              {'name': 'app01', 'ports': ports[1::2]}]}


MINIMAL = """- hosts: hypervisors
  gather_facts: true
  tasks:
    - ansible.builtin.command: "true"
      changed_when: false
"""


def playbook(inventory, extra=(), name='kvmnet.nat.expose'):
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', os.path.join(STATE, 'hosts.json'),
            '-i', inventory, name] + list(extra)
    env = dict(os.environ, ANSIBLE_NOCOLOR='1')
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError('kvmnet.nat.expose failed:\n%s\n%s' % (proc.stdout[-3000:], proc.stderr[-2000:]))
    recap = re.search(r'hv1\s*:\s*ok=(\d+)\s+changed=(\d+)', proc.stdout)
    return elapsed, int(recap.group(1)), int(recap.group(2))


def write_inventory(tmp, vars_):
    path = os.path.join(tmp, 'inventory')
    os.makedirs(os.path.join(path, 'host_vars'), exist_ok=True)
    with open(os.path.join(path, 'host_vars', 'hv1.yml'), 'w') as handle:
        json.dump(vars_, handle)   # JSON is YAML
    return path


def minimal_playbook(tmp):
    path = os.path.join(tmp, 'minimal.yml')
    with open(path, 'w') as handle:
        handle.write(MINIMAL)
    return path


def measure(sizes, reps):
    rows = []
    subprocess.run(LAB + ['up', '--hv', 'hv1:bookworm'], check=True)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = playbook(write_inventory(tmp, host_vars(sizes[0])))[0]
            minimal = minimal_playbook(tmp)
            for n in sizes:
                print('role N=%d ...' % n, flush=True)
                samples = {}
                for _rep in range(reps):
                    inventory = write_inventory(tmp, host_vars(n))
                    playbook(inventory, ['-e', 'expose_state=absent'])
                    samples.setdefault('role_first_s', []).append(playbook(inventory)[0])
                    elapsed, ok, changed = playbook(inventory)
                    assert changed == 0, 'the re-run changed %d tasks' % changed
                    samples.setdefault('role_noop_s', []).append(elapsed)
                    samples.setdefault('role_tasks', []).append(ok)
                    samples.setdefault('minimal_s', []).append(playbook(inventory, name=minimal)[0])
                    elapsed, _ok, changed = playbook(write_inventory(tmp, host_vars(n, changed=True)))
                    assert changed > 0
                    samples.setdefault('role_one_change_s', []).append(elapsed)
                row = {key: round(statistics.median(values), 3) for key, values in samples.items()}
                row.update(n=n, role_reps=reps, noop_vs_minimal=round(row['role_noop_s'] / row['minimal_s'], 2),
                           first_vs_minimal=round(row['role_first_s'] / row['minimal_s'], 2))
                if n == sizes[0]:
                    row['role_fresh_host_s'] = round(fresh, 3)
                rows.append(row)
    finally:
        subprocess.run(LAB + ['down'], check=False)
    return rows


def table(rows):
    return benchmark.rows_table([('N', 'n'), ('role on a fresh host', 'role_fresh_host_s'), ('role first', 'role_first_s'),
                                 ('role no-op', 'role_noop_s'), ('role 1 change', 'role_one_change_s'),
                                 ('minimal playbook', 'minimal_s'), ('no-op / minimal', 'noop_vs_minimal'),
                                 ('first / minimal', 'first_vs_minimal'), ('tasks', 'role_tasks')], rows)


def main():
    benchmark.sizes_main(__doc__, (10, 100, 1000), measure, table)


if __name__ == '__main__':
    main()
