"""Dataplane cost: new connections/s and one flow's throughput through N forwards, both firewall
backends, against no NAT.

    python3 bench/dataplane.py [--quick] [--reps R] [--sizes N ...] [--nft-sizes N ...] [--seconds S] [--before REF]

Runs as root, entirely inside three network namespaces it creates and deletes, also on failure:

    kvd<pid>-cli 203.0.113.50 --- 203.0.113.10 kvd<pid>-hv virbr0 192.168.122.1 --- 192.168.122.200 kvd<pid>-gst

The hypervisor namespace gets N forwards from the ``kvmnet.nat.forwards`` module (one transaction),
the measured one sorted last: host ports 30000-30001 of 203.0.113.10 to the guest's 30000-30001,
behind N-1 tcp forwards to 2 + N/50 (at most 150) other guests (all tcp: walked in order, a tcp
lookup would pass every one of them). The guest serves ``connrate server`` (bench/connrate.c: accept, "ok",
close) on 30000 and ``iperf3 -s`` on 30001. From the client, for a bounded time each:

  new_conn_per_s   connections completed per second (connect, read the answer, close), 32 in flight
  throughput_mbit  one iperf3 tcp stream, client to guest

Configurations, interleaved, each number the median of R runs:

  no_nat      the guest's address, routed by the hypervisor namespace with no rule at all: the limit
  bare_dnat   one DNAT rule in PREROUTING and nothing else: what NAT itself costs
  ours N      the module's rules for N forwards (its default backend, auto: iptables here, as the
              hypervisor namespace has no libvirt table)
  nft N       the module with ``backend: nftables`` for N forwards, on libvirt's nftables tables as
              libvirt 11.3 writes them (tests/support/nftsets.py: its forward chain rejects new
              connections to the guest network; our accept rule at its top lets ours through),
              loaded again before each apply; every other configuration runs without them
  before N    the same as ours with the module of git revision REF (--before), to show a layout change

The client runs on CPU 0 and the guest's servers on CPU 1 when there are two CPUs or more.
``walk_*`` count the rules a new connection of the measured forward is tested against in our
chains (read from iptables-save); ``nft_rules`` counts every rule of our nftables table (each a map
lookup or a match: at most that many are tested, at any N). Every process started here is killed by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from ansible_collections.kvmnet.nat.plugins.module_utils.nftables import rules as nft_rules
from ansible_collections.kvmnet.nat.tests.support import benchmark, rulewalk
from ansible_collections.kvmnet.nat.tests.support.topology import Topology

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLIC_IP = benchmark.PUBLIC_IP
CLIENT_IP = '203.0.113.50'
GUEST_IP = '192.168.122.200'
CONN_PORT, IPERF_PORT = 30000, 30001
PARALLEL = 32
PINNED = (os.cpu_count() or 1) >= 2
SIZES = (1, 100, 1000)
NFT_SIZES = (1, 100, 1000, 10000)


def forwards(n):
    """N forwards: N-1 tcp fillers on other guests, then the measured one (sorted last)."""
    guests = min(n // 50 + 2, 150)  # 192.168.122.10-159: never the measured guest's address
    result = [{'guest': 'g%03d' % (i % guests), 'guest_ip': '192.168.122.%d' % (10 + i % guests),
               'proto': 'tcp', 'host_port': 10000 + i, 'guest_port': 80 + i % 7} for i in range(n - 1)]
    result.append({'guest': 'measured', 'guest_ip': GUEST_IP, 'proto': 'tcp',
                   'host_port': '%d-%d' % (CONN_PORT, IPERF_PORT), 'guest_port': '%d-%d' % (CONN_PORT, IPERF_PORT)})
    return result


def pin(cpu, argv):
    return ['taskset', '-c', str(cpu)] + argv if PINNED else argv


class Lab(Topology):
    """The three namespaces (tests/support/topology.py); ``name`` is the hypervisor's (where
    benchmark.run_module runs the module)."""

    def __init__(self):
        super().__init__('kvd%d' % os.getpid(), ('cli', 'hv', 'gst'))
        self.cli, self.name, self.gst = self.ns['cli'], self.ns['hv'], self.ns['gst']

    def up(self):
        super().up()
        try:
            self.link('hv', 'pub0', 'cli', 'eth0')
            self.link('hv', 'vnet0', 'gst', 'eth0')
            for cmd in ('ip addr add %s/24 dev pub0' % PUBLIC_IP, 'ip link set pub0 up',
                        'ip link add virbr0 type bridge', 'ip addr add 192.168.122.1/24 dev virbr0',
                        'ip link set vnet0 master virbr0', 'ip link set vnet0 up', 'ip link set virbr0 up',
                        'sysctl -qw net.ipv4.ip_forward=1'):
                self.run('hv', cmd)
            for cmd in ('ip addr add %s/24 dev eth0' % CLIENT_IP, 'ip link set eth0 up',
                        'ip route add 192.168.122.0/24 via %s' % PUBLIC_IP,
                        "sysctl -qw 'net.ipv4.ip_local_port_range=1024 65535'"):
                self.run('cli', cmd)
            for cmd in ('ip addr add %s/24 dev eth0' % GUEST_IP, 'ip link set eth0 up',
                        'ip route add default via 192.168.122.1', 'sysctl -qw net.core.somaxconn=4096'):
                self.run('gst', cmd)
        except BaseException:
            self.down()
            raise
        return self

    def sh(self, ns, cmd):
        """A command line in the namespace named ``ns``; its stdout."""
        role = next(role for role, name in self.ns.items() if name == ns)
        return self.run(role, cmd).stdout

    def start(self, ns, argv):
        return self.spawn(next(role for role, name in self.ns.items() if name == ns), argv)

    def flush(self):
        for table in ('filter', 'nat'):
            self.run('hv', 'iptables -t %s -F' % table)
            self.run('hv', 'iptables -t %s -X' % table)
        benchmark.nft_reset(self, 'hv', libvirt=False)


def walk(save, chain, port):
    """How many rules of ours a new connection to ``port`` (tcp, from the client) is tested against,
    from ``chain``, until the measured forward's rule takes it (rulewalk, as the unit tests use it)."""
    if chain.endswith('_DNAT'):
        packet = dict(proto='tcp', src=CLIENT_IP, dst=PUBLIC_IP, dport=port, states=('NEW',))
    else:
        packet = dict(proto='tcp', src=CLIENT_IP, dst=GUEST_IP, dport=port, states=('NEW', 'DNAT'),
                      origdst=PUBLIC_IP, origdstport=port, replsrc=GUEST_IP)
    rule, tested = rulewalk.walk(rulewalk.from_save(save), chain, packet, count=True)
    if rule is None or 'kvmnet.nat: measured tcp/' not in rule:
        raise RuntimeError('the measured forward is not reachable from %s' % chain)
    return tested


def nft_rule_count(lab):
    """Rules in our nftables table, every chain (``nft -j``: one ``rule`` object each)."""
    listed = json.loads(lab.sh(lab.name, 'nft -j list table inet %s' % nft_rules.table_name()))
    return sum(1 for obj in listed['nftables'] if 'rule' in obj)


def build_connrate(tmp):
    binary = os.path.join(tmp, 'connrate')
    subprocess.run(['gcc', '-O2', '-Wall', '-Werror', '-o', binary, os.path.join(HERE, 'connrate.c')], check=True)
    return binary


def wait_listening(lab, port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ':%d ' % port in lab.sh(lab.gst, 'ss -Hltn'):
            return
        time.sleep(0.05)
    raise RuntimeError('nothing listens on %d in the guest namespace' % port)


def conn_rate(lab, binary, target, seconds):
    argv = pin(0, [binary, 'client', target, str(CONN_PORT), str(PARALLEL), str(seconds), '100000000'])
    completed, failed, _in_flight, elapsed = lab.sh(lab.cli, shlex.join(argv)).split()
    if int(completed) == 0 or int(failed) > 0:
        raise RuntimeError('connections to %s:%d: %s completed, %s failed' % (target, CONN_PORT, completed, failed))
    return int(completed) / float(elapsed)


def throughput(lab, target, seconds):
    argv = ['timeout', str(int(seconds) + 15), 'iperf3', '-J', '-c', target, '-p', str(IPERF_PORT),
            '-t', str(seconds), '--connect-timeout', '3000'] + (['-A', '0,1'] if PINNED else [])
    proc = subprocess.run(['ip', 'netns', 'exec', lab.cli] + argv, capture_output=True, text=True, check=False)
    try:
        return json.loads(proc.stdout)['end']['sum_received']['bits_per_second'] / 1e6
    except (ValueError, KeyError) as exc:
        detail = 'rc=%d %s %s' % (proc.returncode, proc.stdout[-500:], proc.stderr[-500:])
        raise RuntimeError('iperf3 to %s:%d: %s' % (target, IPERF_PORT, detail)) from exc


def checkout(ref, tmp):
    """The collection at git revision ``ref``, as a collections root for PYTHONPATH."""
    root = os.path.join(tmp, 'before')
    dest = os.path.join(root, 'ansible_collections', 'kvmnet', 'nat')
    os.makedirs(dest)
    archive = subprocess.run(['git', '-C', os.path.dirname(HERE), 'archive', ref, 'plugins'],
                             capture_output=True, check=True).stdout
    subprocess.run(['tar', '-x', '-C', dest], input=archive, check=True)
    return root


def apply(lab, tmp, config):
    """Bring the hypervisor namespace to ``config``; return the address the client aims at."""
    kind, n, root = config
    lab.flush()
    if kind == 'no_nat':
        return GUEST_IP
    if kind == 'bare_dnat':
        lab.sh(lab.name, 'iptables -t nat -A PREROUTING -d %s -p tcp --dport %d:%d -j DNAT --to-destination %s'
               % (PUBLIC_IP, CONN_PORT, IPERF_PORT, GUEST_IP))
        return PUBLIC_IP
    if kind == 'nft':
        benchmark.nft_reset(lab, 'hv')
    _elapsed, result = benchmark.run_module(lab, tmp, forwards(n), coll_root=root,
                                            backend='nftables' if kind == 'nft' else None)
    assert result['changed'] is True, result
    assert kind != 'nft' or result['backend']['name'] == 'nftables', result['backend']
    return PUBLIC_IP


def measure(sizes, reps, seconds, before=None, nft_sizes=()):
    """Rows per N (and the two references), every rep through every configuration once: ``sizes`` for
    the iptables backend (and ``before``), ``nft_sizes`` for the nftables backend."""
    samples, walks = {}, {}
    with Lab() as lab, tempfile.TemporaryDirectory() as tmp:
        configs = [('no_nat', None, None), ('bare_dnat', None, None)]
        configs += [('ours', n, benchmark.COLL_ROOT) for n in sizes]
        configs += [('nft', n, benchmark.COLL_ROOT) for n in nft_sizes]
        if before:
            old_root = checkout(before, tmp)
            configs += [('before', n, old_root) for n in sizes]
        binary = build_connrate(tmp)
        lab.start(lab.gst, pin(1, [binary, 'server', str(CONN_PORT)]))
        lab.start(lab.gst, ['iperf3', '-s', '-p', str(IPERF_PORT)])
        wait_listening(lab, CONN_PORT)
        wait_listening(lab, IPERF_PORT)
        for rep in range(reps):
            for config in configs:
                target = apply(lab, tmp, config)
                key = config[:2]
                if config[0] in ('ours', 'before') and key not in walks:
                    save = lab.sh(lab.name, 'iptables-save')
                    walks[key] = {'walk_dnat': walk(save, 'KVMNAT_DNAT', CONN_PORT),
                                  'walk_fwd': walk(save, 'KVMNAT_FWD', CONN_PORT),
                                  'chains': save.count('\n:KVMNAT')}
                if config[0] == 'nft' and key not in walks:
                    walks[key] = {'nft_rules': nft_rule_count(lab)}
                rate = conn_rate(lab, binary, target, seconds)
                mbit = throughput(lab, target, seconds)
                samples.setdefault(key, []).append((rate, mbit))
                print('  rep %d %-9s %5s %8.0f conn/s %8.0f Mbit/s'
                      % (rep + 1, config[0], config[1] or '', rate, mbit), flush=True)
        lab.flush()

    def median(key, index):
        return round(statistics.median(s[index] for s in samples[key]))

    def spread(key, index):
        return [round(min(s[index] for s in samples[key])), round(max(s[index] for s in samples[key]))]

    def ratio(key, base, index):
        """Median over the reps of this rep's value over the same rep's ``base`` value.

        Runs of one rep are seconds apart, so a slow stretch of a shared machine hits both.
        """
        return round(statistics.median(a[index] / b[index] for a, b in zip(samples[key], samples[base])), 3)

    no_nat, bare = ('no_nat', None), ('bare_dnat', None)
    rows = {}
    for n in sorted(set(sizes) | set(nft_sizes)):
        row = {'new_conn_per_s_no_nat': median(no_nat, 0), 'throughput_mbit_no_nat': median(no_nat, 1),
               'new_conn_per_s_bare_dnat': median(bare, 0), 'throughput_mbit_bare_dnat': median(bare, 1)}
        for prefix, kind, of in (('', 'ours', sizes), ('nft_', 'nft', nft_sizes)):
            if n not in of:
                continue
            this, smallest = (kind, n), (kind, min(of))
            row.update({prefix + 'new_conn_per_s': median(this, 0), prefix + 'throughput_mbit': median(this, 1),
                        prefix + 'new_conn_per_s_range': spread(this, 0),
                        prefix + 'throughput_mbit_range': spread(this, 1),
                        prefix + 'conn_vs_smallest_n': ratio(this, smallest, 0),
                        prefix + 'conn_vs_no_nat': ratio(this, no_nat, 0),
                        prefix + 'throughput_vs_no_nat': ratio(this, no_nat, 1),
                        prefix + 'throughput_vs_bare_dnat': ratio(this, bare, 1)})
            row.update(walks[this])
        if n in nft_sizes:
            row['nft_smallest_n'] = min(nft_sizes)
        if before and n in sizes:
            old = ('before', n)
            row.update({'before_ref': before, 'before_new_conn_per_s': median(old, 0),
                        'before_throughput_mbit': median(old, 1),
                        'before_conn_vs_smallest_n': ratio(old, ('before', min(sizes)), 0),
                        'before_throughput_vs_no_nat': ratio(old, no_nat, 1)})
            row.update({'before_' + k: v for k, v in walks[old].items()})
        row.update(dataplane_reps=reps, dataplane_seconds=seconds)
        rows[n] = row
    return rows


COLUMNS = [('N', None), ('rules walked DNAT/FWD', 'walk'), ('nft: rules', 'nft_rules'),
           ('conn/s', 'new_conn_per_s'), ('nft: conn/s', 'nft_new_conn_per_s'),
           ('conn/s vs smallest N', 'conn_vs_smallest_n'), ('nft: conn/s vs smallest N', 'nft_conn_vs_smallest_n'),
           ('Mbit/s', 'throughput_mbit'), ('nft: Mbit/s', 'nft_throughput_mbit'),
           ('Mbit/s vs no NAT', 'throughput_vs_no_nat'), ('nft: Mbit/s vs no NAT', 'nft_throughput_vs_no_nat'),
           ('Mbit/s vs bare DNAT', 'throughput_vs_bare_dnat'),
           ('before: walked', 'before_walk'), ('before: conn/s', 'before_new_conn_per_s'),
           ('before: conn/s vs smallest N', 'before_conn_vs_smallest_n'),
           ('before: Mbit/s vs no NAT', 'before_throughput_vs_no_nat')]


def table(rows):
    lines = [[title for title, _key in COLUMNS]]
    for n in sorted(rows):
        row = dict(rows[n])
        if 'walk_dnat' in row:
            row['walk'] = '%s/%s' % (row['walk_dnat'], row['walk_fwd'])
        if 'before_walk_dnat' in row:
            row['before_walk'] = '%s/%s' % (row['before_walk_dnat'], row['before_walk_fwd'])
        lines.append([str(n)] + [str(row.get(key, '-')) for _title, key in COLUMNS[1:]])
    out = [benchmark.aligned(lines)]
    first = rows[min(rows)]
    out.append('no NAT: %d conn/s, %d Mbit/s; one bare DNAT rule: %d conn/s, %d Mbit/s'
               % (first['new_conn_per_s_no_nat'], first['throughput_mbit_no_nat'],
                  first['new_conn_per_s_bare_dnat'], first['throughput_mbit_bare_dnat']))
    return '\n'.join(out)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--quick', action='store_true', help='N = 10 and 100, one short run each')
    parser.add_argument('--reps', type=int)
    parser.add_argument('--seconds', type=float)
    parser.add_argument('--sizes', type=int, nargs='*', help='iptables backend, instead of 1 100 1000')
    parser.add_argument('--nft-sizes', type=int, nargs='*', help='nftables backend, instead of 1 100 1000 10000')
    parser.add_argument('--before', metavar='REF', help='also measure the module of this git revision')
    parser.add_argument('--out', help='write the rows as JSON here')
    args = parser.parse_args()
    if shutil.which('iperf3') is None:
        sys.exit('iperf3 is missing: make deps installs it')
    sizes = args.sizes if args.sizes is not None else ((10, 100) if args.quick else SIZES)
    nft_sizes = args.nft_sizes if args.nft_sizes is not None else ((10, 100) if args.quick else NFT_SIZES)
    rows = measure(sizes, args.reps or (1 if args.quick else 5), args.seconds or (2 if args.quick else 3),
                   before=args.before, nft_sizes=nft_sizes)
    print(table(rows))
    benchmark.dump(args.out, rows)


if __name__ == '__main__':
    main()
