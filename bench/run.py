"""The benchmark: converge cost and dataplane cost, one run, one table, one plot, one JSON file.

    python3 bench/run.py [--quick] [--before REF] [--out bench/results.json] [--plot docs/bench.png]

Every script here imports what the benchmarks share (tests/support: the namespaces, the rule walker,
running the module) as ``ansible_collections.kvmnet.nat.tests.support``, as the unit tests do: run
them with the collections root on PYTHONPATH and in ANSIBLE_COLLECTIONS_PATH (``make bench`` sets
both to the copy ``make collection`` writes).

Runs bench/converge.py (converge cost of both firewall backends, module time, N = 10, 100, 1000,
10000, against a loop of ansible.builtin.iptables tasks), bench/dataplane.py (new connections/s and
throughput through N = 1, 100, 1000 forwards of the iptables backend and N = 1, 100, 1000, 10000 of
the nftables backend, against the same path with no NAT), both in network namespaces of their own,
bench/role.py (the expose role over ssh on a lab hypervisor, against a minimal playbook) and
bench/fleet.py (the role on 1, 4 and 8 lab hypervisors at once), as root. ``--quick``: N = 10 and
100 (the nftables converge also 1000), one short run each, the fleet of one hypervisor only, no role
and no comparison with an older revision. bench/doctor.py
times the doctor module over N forwards whose guests answer, written by kvmnet.nat (N = 10, 100, 1000,
5000) and as hand-made flat rules (N = 1000, 5000; ``--quick``: N = 100 and 5000, and 5000 hand-made);
bench/inventory.py the role's validate
stage on the controller for 10, 25 and 50 hypervisors with 10 guest hosts each (``--quick``: 10).

Writes ``--out`` (per N: every number of both parts, null where a part did not run at that N, plus
the machine) and, when matplotlib is importable, the plot ``--plot``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import converge  # the benchmarks next to this script (its directory is on sys.path when run as one)
import dataplane
import doctor
import fleet
import inventory
import role

HERE = os.path.dirname(os.path.abspath(__file__))

CONVERGE_KEYS = ('ours_first_s', 'ours_noop_s', 'ours_one_change_s', 'builtin_first_s', 'builtin_noop_s',
                 'nft_first_s', 'nft_noop_s', 'nft_one_change_s')
DATAPLANE_KEYS = ('new_conn_per_s', 'new_conn_per_s_no_nat', 'throughput_mbit', 'throughput_mbit_no_nat',
                  'nft_new_conn_per_s', 'nft_throughput_mbit')


def merge(converge_rows, dataplane_rows, role_rows=()):
    """{N: row}: the issue's keys always present (null when not measured at that N), then the rest."""
    by_n = {}
    for row in list(converge_rows) + list(role_rows):
        by_n.setdefault(row['n'], {}).update({k: v for k, v in row.items() if k != 'n'})
    for n, row in dataplane_rows.items():
        by_n.setdefault(n, {}).update(row)
    out = {}
    for n in sorted(by_n):
        row = {key: by_n[n].get(key) for key in CONVERGE_KEYS + DATAPLANE_KEYS}
        row.update((k, v) for k, v in by_n[n].items() if k not in row)
        out[str(n)] = row
    return out


def plot(by_n, path, fleet_rows=()):
    import matplotlib  # bench only (README, "Dependencies")
    matplotlib.use('Agg')
    from matplotlib import pyplot

    def series(key):
        points = [(int(n), row[key]) for n, row in by_n.items() if row.get(key) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    fig, (conv, conn, tput, ships) = pyplot.subplots(1, 4, figsize=(20, 4.6))
    for key, label, style in (('builtin_first_s', 'builtin iptables loop, first run', 'o--'),
                              ('ours_playbook_first_s', 'kvmnet.nat.forwards via ansible-playbook', 's-'),
                              ('ours_first_s', 'kvmnet.nat.forwards, module time (iptables)', '^-'),
                              ('ours_noop_s', 'kvmnet.nat.forwards, no-op re-run (iptables)', 'v-'),
                              ('nft_first_s', 'kvmnet.nat.forwards, module time (nftables)', '^:'),
                              ('nft_noop_s', 'kvmnet.nat.forwards, no-op re-run (nftables)', 'v:'),
                              ('nft_one_change_s', 'kvmnet.nat.forwards, one change (nftables)', 'x:'),
                              ('floor_s', 'AnsibleModule alone, same arguments (floor)', 'k.:'),
                              ('role_noop_s', 'role kvmnet.nat.expose over ssh, no-op', 'D-')):
        xs, ys = series(key)
        if xs:
            conv.plot(xs, ys, style, label=label)
    conv.set(xscale='log', yscale='log', xlabel='forwards (N)', ylabel='seconds', title='Converge time')
    for axis, key, before, ylabel, title in (
            (conn, 'new_conn_per_s', 'before_new_conn_per_s', 'connections / s', 'New connections through N forwards'),
            (tput, 'throughput_mbit', 'before_throughput_mbit', 'Mbit/s', 'One TCP flow through N forwards')):
        top = 0
        for prefix, fmt, label in (('', 's-', 'kvmnet.nat, iptables (port dispatch), median, min-max'),
                                   ('nft_', '^-', 'kvmnet.nat, nftables (maps), median, min-max')):
            xs, ys = series(prefix + key)
            if not xs:
                continue
            spreads = [by_n[str(x)].get(prefix + key + '_range') or [y, y] for x, y in zip(xs, ys)]
            axis.errorbar(xs, ys, yerr=[[y - lo for y, (lo, _hi) in zip(ys, spreads)],
                                        [hi - y for y, (_lo, hi) in zip(ys, spreads)]],
                          fmt=fmt, capsize=3, label=label)
            top = max([top] + [hi for _lo, hi in spreads])
        bxs, bys = series(before)
        if bxs:
            ref = next(row['before_ref'] for row in by_n.values() if row.get('before_ref'))
            axis.plot(bxs, bys, 'o--', label='before: flat chains (%s)' % ref[:7])
        first = next(row for row in by_n.values() if row.get(key + '_no_nat') is not None)
        axis.axhline(first[key + '_no_nat'], color='grey', linestyle=':', label='routed, no NAT rules')
        axis.axhline(first[key + '_bare_dnat'], color='black', linestyle='-.', label='one bare DNAT rule (iptables)')
        top = max(top, first[key + '_no_nat'])
        axis.set(xscale='log', ylim=(0, top * 1.12), xlabel='forwards (N), the measured one last', ylabel=ylabel, title=title)
    for key, label, style in (('fleet_first_s', 'role, first run (prepared hosts)', 's-'),
                              ('fleet_noop_s', 'role, no-op', 'D-'),
                              ('minimal_s', 'minimal playbook (facts + one command)', 'o:'),
                              ('one_call_s', 'one module call, no facts', 'x:')):
        points = [(row['hypervisors'], row[key]) for row in fleet_rows if row.get(key) is not None]
        if points:
            ships.plot([p[0] for p in points], [p[1] for p in points], style, label=label)
    ships.set(xlabel='hypervisors at once (forks %s)' % (fleet_rows[0]['forks'] if fleet_rows else '-'),
              ylabel='seconds', ylim=(0, None),
              title='kvmnet.nat.expose across a fleet, %s forwards each' % (fleet_rows[0]['n'] if fleet_rows else '-'))
    for axis in (conv, conn, tput, ships):
        axis.grid(True, which='both', alpha=0.3)
        axis.legend(fontsize=7, loc='lower left')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=90)


def iptables_version():
    return subprocess.run(['iptables', '--version'], capture_output=True, text=True, check=False).stdout.strip()


def nft_version():
    return subprocess.run(['nft', '--version'], capture_output=True, text=True, check=False).stdout.strip()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true')
    parser.add_argument('--before', metavar='REF', help='also measure the dataplane of this git revision')
    parser.add_argument('--out', default=os.path.join(HERE, 'results.json'))
    parser.add_argument('--plot', default=os.path.join(os.path.dirname(HERE), 'docs', 'bench.png'))
    args = parser.parse_args()
    started = time.monotonic()
    if args.quick:
        converge_rows = converge.run(converge.QUICK_SIZES, reps=1, nft_sizes=converge.QUICK_NFT_SIZES)
        dataplane_rows = dataplane.measure((10, 100), reps=1, seconds=2, nft_sizes=(10, 100))
        role_rows = []
        fleet_rows = fleet.measure((1,), n=100, reps=1, forks=8)
        doctor_rows = doctor.run((100, 5000), reps=1, hand_made_sizes=(5000,))
        inventory_rows = inventory.measure((10,), reps=1)
    else:
        converge_rows = converge.run(converge.SIZES, reps=3, nft_sizes=converge.NFT_SIZES)
        dataplane_rows = dataplane.measure(dataplane.SIZES, reps=5, seconds=3, before=args.before,
                                           nft_sizes=dataplane.NFT_SIZES)
        role_rows = role.measure((10, 100, 1000), reps=3)
        fleet_rows = fleet.measure((1, 4, 8), n=100, reps=3, forks=8)
        doctor_rows = doctor.run((10, 100, 1000, 5000), reps=3, hand_made_sizes=(1000, 5000))
        inventory_rows = inventory.measure((10, 25, 50), reps=3)
    import ansible  # the same ansible-core the runs used
    results = {
        'machine': {'cores': os.cpu_count(), 'kernel': platform.release(), 'iptables': iptables_version(),
                    'nft': nft_version()},
        'ansible_core': ansible.__version__, 'date': time.strftime('%Y-%m-%d'),
        'command': ' '.join(['python3 bench/run.py'] + sys.argv[1:]),
        'seconds': round(time.monotonic() - started),
        'by_n': merge(converge_rows, dataplane_rows, role_rows),
        'fleet': fleet_rows,
        'doctor': doctor_rows,
        'inventory': inventory_rows,
    }
    with open(args.out, 'w') as handle:
        json.dump(results, handle, indent=2)
        handle.write('\n')
    print()
    print('Converge (seconds, module time unless "playbook", median of %d; iptables = the ours_* rows, '
          'nftables = backend: nftables on libvirt\'s nftables tables):' % converge_rows[0]['reps'])
    print(converge.table(converge_rows))
    print()
    print('Dataplane (median of %d runs of %ss; ratios are medians of per-run ratios; unprefixed columns: '
          'the iptables backend, "nft:" the nftables backend):'
          % (dataplane_rows[min(dataplane_rows)]['dataplane_reps'], dataplane_rows[min(dataplane_rows)]['dataplane_seconds']))
    print(dataplane.table(dataplane_rows))
    if role_rows:
        print()
        print('The role kvmnet.nat.expose over ssh on a lab hypervisor (seconds, median of %d):' % role_rows[0]['role_reps'])
        print(role.table(role_rows))
    print()
    print('The role on a fleet of lab hypervisors at once (seconds, median of %d, forks %d):'
          % (fleet_rows[0]['fleet_reps'], fleet_rows[0]['forks']))
    print(fleet.table(fleet_rows))
    print()
    print('The doctor over all forwards of a hypervisor namespace, guests answering (module time, median of %d):'
          % len(doctor_rows[0]['doctor_runs']))
    print(doctor.table(doctor_rows))
    print()
    print('The role\'s validate stage on the controller, %d guest hosts per hypervisor (seconds, median of %d):'
          % (inventory.GUESTS_EACH, inventory_rows[0]['reps']))
    print(inventory.table(inventory_rows))
    print('written: %s' % args.out)
    try:
        plot(results['by_n'], args.plot, fleet_rows)
        print('plot: %s' % args.plot)
    except ImportError:
        print('plot: not drawn, matplotlib is not installed (make bench installs it)')
    print('took %d s' % results['seconds'])


if __name__ == '__main__':
    main()
