# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""What the benchmarks in bench/ share: the hypervisor namespace, libvirt's nftables tables in it,
running the forwards module in it as Ansible does, timing a command, and the command line, tables and
JSON of a run over sizes.

Imported as ``ansible_collections.kvmnet.nat.tests.support.benchmark``, with the collections root
on PYTHONPATH (``make bench`` sets it; see docs/benchmarks.md). The module runs from the collection
under ANSIBLE_COLLECTIONS_PATH (the copy ``make collection`` writes).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as nft_rules
from ansible_collections.kvmnet.nat.tests.support import nftsets
from ansible_collections.kvmnet.nat.tests.support.topology import Topology

COLL_ROOT = os.environ.get('ANSIBLE_COLLECTIONS_PATH', '/var/tmp/kvmnet-nat-build/collections').split(':')[0]
PUBLIC_IP = '203.0.113.10'


# the nftables tables a benchmark's hypervisor namespace may hold besides iptables-nft's own: libvirt's
# (nftsets.LIBVIRT) and ours (the default chain prefix's table)
NFT_TABLES = (('ip', nft_rules.LIBVIRT_TABLE), ('ip6', nft_rules.LIBVIRT_TABLE), ('inet', nft_rules.table_name()))


def nft_reset(topo, role, libvirt=True):
    """In ``role``'s namespace of Topology ``topo``: our nftables table and libvirt's deleted, in one
    transaction; then, when ``libvirt``, libvirt's tables loaded again exactly as libvirt 11.3 writes
    them (nftsets.LIBVIRT): a host whose libvirt uses its nftables firewall backend, with no forward of
    ours and no accept rule of ours in libvirt's forward chains. iptables' tables are left alone."""
    listed = topo.x(role, 'nft', 'list', 'tables').stdout.splitlines()
    gone = ''.join('delete table %s %s\n' % pair for pair in NFT_TABLES if 'table %s %s' % pair in listed)
    if gone:
        topo.x(role, 'nft', '-f', '-', data=gone)
    if libvirt:
        topo.x(role, 'nft', '-f', '-', data=nftsets.LIBVIRT)


class Namespace(Topology):
    """The hypervisor's namespace (tests/support/topology.py), with a public veth and libvirt's bridge;
    ``tag`` names it (default ``kvb<pid>``; a second one in the same process needs another)."""

    def __init__(self, tag=None):
        super().__init__(tag or 'kvb%d' % os.getpid(), ('hv',))
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


def run_module(ns, tmp, fwds, coll_root=COLL_ROOT, backend=None, details=False):
    """The forwards module as Ansible runs it (its JSON arguments in a file), in namespace ``ns.name``.

    The module of this checkout takes its host lock in ``tmp`` (never /run on this machine) and, unless
    ``details``, is called as the role calls it: ``return_details: false`` (no rules and forwards in its
    result: at N = 10 000 those are 2 MB that Ansible's exit_json scans for secrets and encodes, about a
    second). An older revision measured for comparison has no lock and neither option. ``backend``: the
    module's option ``backend`` (left out when None: the module's default, ``auto``).
    """
    path = os.path.join(tmp, 'args.json')
    args = {'public_ip': PUBLIC_IP, 'forwards': fwds}
    if coll_root == COLL_ROOT:
        args['lock_path'] = os.path.join(tmp, 'kvmnet-nat.lock')
        args['return_details'] = bool(details)
    if backend is not None:
        args['backend'] = backend
    with open(path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    env = dict(os.environ, PYTHONPATH=coll_root)
    module = os.path.join(coll_root, 'ansible_collections', 'kvmnet', 'nat', 'plugins', 'modules', 'forwards.py')
    elapsed, out = timed(ns.name, [sys.executable, module, path], env=env)
    return elapsed, json.loads(out)


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
