"""The inventory side of a fleet: the role's validate stage over H hypervisors and 10 guest hosts each.

    python3 bench/inventory.py [--sizes 10 25 50] [--reps 3] [--out FILE]

Every guest host declares 5 ports on its hypervisor (``expose_hypervisor``, ``expose_ports``). Two
playbooks over the group ``hypervisors``, on the controller only (``ansible_connection: local``, and
only set_fact, fail and debug tasks run: no host is contacted, nothing is changed anywhere):

  read_once_s   the role's validate stage (kvmnet.nat.expose, tasks_from validate.yml): the guest
                hosts' variables read once (kvmnet.nat.guest_hosts, run_once), then each hypervisor's
                declarations checked against its own group
  per_hv_scan_s the same checks the way the role did them before 1.1.0: each hypervisor reading every
                inventory host's variables (kvmnet.nat.declared_exposures and orphan_guests on hostvars)

Each ``hostvars[host]`` assembles that host's variables, so the scan costs hypervisors x hosts of
those. Median of ``--reps`` runs, forks 8.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from ansible_collections.kvmnet.nat.tests.support import benchmark

HERE = os.path.dirname(os.path.abspath(__file__))

GUESTS_EACH = 10
PORTS_EACH = 5
READ_ONCE = """- hosts: hypervisors
  gather_facts: false
  tasks:
    - ansible.builtin.import_role:
        name: kvmnet.nat.expose
        tasks_from: validate.yml
"""
PER_HV_SCAN = """- hosts: hypervisors
  gather_facts: false
  tasks:     # the three tasks of the role's validate.yml before 1.1.0, as a play
    - ansible.builtin.set_fact:
        declared: "{{ hostvars | kvmnet.nat.declared_exposures(inventory_hostname, inventory_hostname, []) }}"
      any_errors_fatal: true
    - ansible.builtin.fail:
        msg: "{{ orphans }}"
      vars:
        orphans: "{{ hostvars | kvmnet.nat.orphan_guests(ansible_play_hosts_all) }}"
      when: orphans | length > 0
      run_once: true
      any_errors_fatal: true
    - ansible.builtin.debug:
        msg: "{{ orphans }}"
      vars:
        orphans: "{{ hostvars | kvmnet.nat.orphan_guests(ansible_play_hosts_all) }}"
      when: orphans | length > 0
      run_once: true
"""


def inventory(path, hypervisors):
    """hv0..hvH-1 (local connection: nothing is contacted) and 10 guest hosts naming each."""
    hosts = {'hypervisors': {'hosts': {}}, 'guests': {'hosts': {}}, 'all': {'vars': {'ansible_connection': 'local'}}}
    for hv in range(hypervisors):
        hosts['hypervisors']['hosts']['hv%d' % hv] = {'expose_public_ip': '203.0.113.%d' % (hv % 250 + 1)}
        for guest in range(GUESTS_EACH):
            hosts['guests']['hosts']['g%d-%d' % (hv, guest)] = {
                'expose_hypervisor': 'hv%d' % hv, 'expose_guest_ip': '192.168.122.%d' % (10 + guest),
                'expose_ports': [{'host': 10000 + guest * PORTS_EACH + p, 'guest': 80 + p} for p in range(PORTS_EACH)]}
    with open(path, 'w') as handle:
        json.dump(hosts, handle)


def playbook(inventory_path, path):
    argv = [os.path.join(os.path.dirname(sys.executable), 'ansible-playbook'), '-i', inventory_path, '-f', '8', path]
    start = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False,
                          env=dict(os.environ, ANSIBLE_COLLECTIONS_PATH=benchmark.COLL_ROOT, ANSIBLE_NOCOLOR='1'))
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError('%s failed:\n%s\n%s' % (path, proc.stdout[-3000:], proc.stderr[-2000:]))
    return elapsed


def measure(sizes, reps):
    rows = []
    with tempfile.TemporaryDirectory(prefix='kvmnet-inv-') as tmp:
        books = {}
        for key, text in (('read_once_s', READ_ONCE), ('per_hv_scan_s', PER_HV_SCAN)):
            books[key] = os.path.join(tmp, key + '.yml')
            with open(books[key], 'w') as handle:
                handle.write(text)
        for size in sizes:
            path = os.path.join(tmp, 'inventory-%d.json' % size)
            inventory(path, size)
            print('inventory: %d hypervisors, %d guest hosts ...' % (size, size * GUESTS_EACH), flush=True)
            row = {'hypervisors': size, 'guest_hosts': size * GUESTS_EACH, 'reps': reps}
            for key, book in books.items():
                row[key] = round(statistics.median(playbook(path, book) for _rep in range(reps)), 2)
            row['scan_over_read_once'] = round(row['per_hv_scan_s'] / row['read_once_s'], 2)
            rows.append(row)
    return rows


def table(rows):
    return benchmark.rows_table([('hypervisors', 'hypervisors'), ('guest hosts', 'guest_hosts'),
                                 ('read once', 'read_once_s'), ('scan per hypervisor', 'per_hv_scan_s'),
                                 ('scan/read once', 'scan_over_read_once')], rows)


def main():
    benchmark.sizes_main(__doc__, (10, 25, 50), measure, table)


if __name__ == '__main__':
    main()
