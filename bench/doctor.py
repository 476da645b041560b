"""The doctor's cost: kvmnet.nat.doctor over N forwards whose guests answer, in namespaces of its own.

    python3 bench/doctor.py [--sizes 10 100 1000] [--hand-made 1000 5000] [--reps 3] [--out FILE]

A hypervisor namespace with the public address and libvirt's bridge, N/25+1 guest namespaces on the
bridge (at most 50), each answering TCP on port 80 (tests/netns/guest_server.py); N tcp forwards
(host ports 10000..., guest port 80) applied by kvmnet.nat.forwards. Then the doctor module, as
Ansible runs it on a host, over all N forwards with the saved rules compared: every check of every
forward, including a connection to each guest's port. Median of ``--reps`` runs. The targets: under
5 s per hypervisor for 100 forwards (issue 13), under 10 s for 5000 (issue 19). The module's own
time is measured (no ssh, no playbook): over ssh add one round trip.

``--hand-made``: the same N forwards written by hand instead, as flat rules (one DNAT in nat
PREROUTING and one ACCEPT in filter FORWARD per forward, loaded with iptables-restore), and the doctor
over them without a saved file: every forward's packets walked through 2N rules of no kvmnet.nat chain
(issue 19's target: under 10 s for 5000).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from ansible_collections.kvmnet.nat.tests.support.benchmark import COLL_ROOT, PUBLIC_IP, Namespace, dump, timed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_SERVER = os.path.join(REPO, 'tests', 'netns', 'guest_server.py')


MAX_GUESTS = 50


def guest_count(n):
    return min(n // 25 + 1, MAX_GUESTS)


def forwards(n):
    guests = guest_count(n)
    return [{'guest': 'g%03d' % (i % guests), 'guest_ip': '192.168.122.%d' % (10 + i % guests), 'host_port': 10000 + i,
             'guest_port': 80} for i in range(n)]


class Guests(Namespace):
    """The hypervisor namespace of the converge benchmark, with guest namespaces that answer on :80."""

    def __init__(self, guests):
        super().__init__()
        self.guest_roles = ['g%03d' % i for i in range(guests)]
        self.ns.update({role: '%s-%s' % (self.tag, role) for role in self.guest_roles})

    def up(self):
        super().up()
        try:
            for index, role in enumerate(self.guest_roles):
                self.link('hv', 'vg%d' % index, role, 'eth0')
                self.run('hv', 'ip link set vg%d master virbr0 up' % index)
                self.run(role, 'ip addr add 192.168.122.%d/24 dev eth0' % (10 + index))
                self.run(role, 'ip link set eth0 up')
                self.run(role, 'ip route add default via 192.168.122.1')
                proc = self.spawn(role, [sys.executable, GUEST_SERVER, role, '--tcp', '80', '--udp'],
                                  stdout=subprocess.PIPE, text=True)
                if proc.stdout.readline().strip() != 'ready':
                    raise RuntimeError('guest server %s did not start' % role)
        except BaseException:
            self.down()
            raise
        return self


def run_doctor(ns, tmp, fwds, base):
    path = os.path.join(tmp, 'doctor.json')
    args = {'public_ip': PUBLIC_IP, 'forwards': fwds, '_ansible_check_mode': True}
    if base:
        args['persist_path'] = base
    with open(path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': args}, handle)
    env = dict(os.environ, PYTHONPATH=COLL_ROOT, PATH='/usr/sbin:/sbin:/usr/bin:/bin')
    module = os.path.join(COLL_ROOT, 'ansible_collections', 'kvmnet', 'nat', 'plugins', 'modules', 'doctor.py')
    elapsed, out = timed(ns.name, [sys.executable, module, path], env=env)
    return elapsed, json.loads(out)


def hand_made(fwds):
    """iptables-restore input: the forwards as flat rules, one DNAT and one ACCEPT each, no chain of kvmnet.nat."""
    lines = ['*nat']
    lines.extend('-A PREROUTING -d %s/32 -p tcp -m tcp --dport %d -j DNAT --to-destination %s:%d'
                 % (PUBLIC_IP, f['host_port'], f['guest_ip'], f['guest_port']) for f in fwds)
    lines.extend(['COMMIT', '*filter'])
    lines.extend('-A FORWARD -d %s/32 -p tcp -m tcp --dport %d -m conntrack --ctstate DNAT --ctorigdstport %d -j ACCEPT'
                 % (f['guest_ip'], f['guest_port'], f['host_port']) for f in fwds)
    lines.append('COMMIT')
    return '\n'.join(lines) + '\n'


def measure(n, reps, handmade=False):
    fwds = forwards(n)
    with Guests(guest_count(n)) as ns, tempfile.TemporaryDirectory() as tmp:
        ns.run('hv', 'sysctl -q -w net.ipv4.ip_forward=1')
        if handmade:
            subprocess.run(['ip', 'netns', 'exec', ns.name, 'iptables-restore', '--noflush'], input=hand_made(fwds),
                           text=True, check=True)
            base = None
        else:
            base = os.path.join(tmp, 'rules')
            _elapsed, result = run_module_persisting(ns, tmp, fwds, base)
            assert not result.get('failed'), result.get('msg')
        times, broken, checks = [], None, 0
        for _rep in range(reps):
            elapsed, result = run_doctor(ns, tmp, fwds, base)
            assert not result.get('failed'), result.get('msg')
            times.append(elapsed)
            broken = result['broken']
            checks = sum(1 for item in result['forwards'] for check in item['checks'].values() if check['ok'] is not None)
        return {'n': n, 'rules': 'hand-made' if handmade else 'kvmnet.nat', 'doctor_s': round(statistics.median(times), 3),
                'doctor_runs': [round(t, 3) for t in times], 'broken': len(broken), 'checks_made': checks,
                'guests': guest_count(n)}


def run_module_persisting(ns, tmp, fwds, base):
    path = os.path.join(tmp, 'args-persist.json')
    with open(path, 'w') as handle:
        json.dump({'ANSIBLE_MODULE_ARGS': {'public_ip': PUBLIC_IP, 'forwards': fwds, 'persist_path': base,
                                           'lock_path': os.path.join(tmp, 'kvmnet-nat.lock')}}, handle)
    module = os.path.join(COLL_ROOT, 'ansible_collections', 'kvmnet', 'nat', 'plugins', 'modules', 'forwards.py')
    elapsed, out = timed(ns.name, [sys.executable, module, path], env=dict(os.environ, PYTHONPATH=COLL_ROOT))
    return elapsed, json.loads(out)


def table(rows):
    lines = ['|    N | rules      | guests | doctor (s, median) | runs (s) | checks made | broken |',
             '|-----:|:-----------|-------:|-------------------:|---------:|------------:|-------:|']
    for row in rows:
        lines.append('| %4d | %-10s | %6d | %18.3f | %s | %11d | %6d |' % (
            row['n'], row.get('rules', 'kvmnet.nat'), row['guests'], row['doctor_s'],
            ' '.join('%.3f' % t for t in row['doctor_runs']), row['checks_made'], row['broken']))
    return '\n'.join(lines)


def run(sizes, reps, hand_made_sizes=()):
    rows = []
    for n in sizes:
        print('doctor N=%d ...' % n, flush=True)
        rows.append(measure(n, reps))
    for n in hand_made_sizes:
        print('doctor N=%d, hand-made rules ...' % n, flush=True)
        rows.append(measure(n, reps, handmade=True))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='*', default=[10, 100, 1000])
    parser.add_argument('--hand-made', type=int, nargs='*', default=[], metavar='N')
    parser.add_argument('--reps', type=int, default=3)
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args()
    rows = run(args.sizes, args.reps, args.hand_made)
    print(table(rows))
    dump(args.out, rows)


if __name__ == '__main__':
    main()
