"""The kvmnet.nat test lab: real hypervisors (systemd-nspawn containers with libvirt and tiny TCG
guests) on a lab switch, and a client on the public side, all inside network namespaces.

    lab.py up [--name kvmlab] [--hv hv1:bookworm --hv hv2:trixie --hv hv3:trixie-nft] [--no-guests]
    lab.py status | down | ssh HV [COMMAND...] | client COMMAND... | inventory

Layout (one lab, NAME defaults to "kvmlab"):
    netns NAME-pub   bridge br0 203.0.113.1/24 and 2001:db8:113::1/64, the lab switch; the apt
                     repository on :8080; forwarding stays off there, so the hypervisors' default
                     route leads nowhere.
    netns NAME-cli   the client: 203.0.113.50 and 203.0.113.51 (a second source address), and
                     2001:db8:113::50.
    hvN              systemd-nspawn container booted from the cached Debian image, a fresh network
                     namespace per boot (--network-bridge), 203.0.113.(10+N), libvirt's default
                     network 192.168.122.0/24, guests webNN (fixed MAC, reserved .10) and appNN.
    hvN:trixie-nft   the flavour "nft" of Debian 13 (FLAVOURS): libvirt's nftables firewall backend
                     (with a lab-only tc wrapper: this kernel has no act_csum), nftables.service
                     enabled with Debian's stock /etc/nftables.conf, and IPv6: 2001:db8:113::(10+N)
                     on the switch, 2001:db8:122::1/64 on libvirt's network (SLAAC), appNN with a
                     fixed MAC too, so that its IPv6 address is known (IPv6 of a guest: ipv6_of()).
The machine's root network namespace gets nothing: ssh goes through netns_proxy.py. `up` records
the root namespace's netfilter, routes and sysctls; `down` removes everything and fails loudly if
they changed. The two namespaces, their links and the repository's process are made and removed by
tests/support/topology.py: `up` and `down` need the collections root on PYTHONPATH (make sets it).
"""
import argparse
import contextlib
import hashlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time

TOPOLOGY_MISSING = None  # or why: `images`, `status`, `ssh` and tests/tools/core_line.py run without it
try:
    from ansible_collections.kvmnet.nat.tests.support import topology
except ImportError as import_error:
    topology = None
    TOPOLOGY_MISSING = str(import_error)

HERE = os.path.dirname(os.path.abspath(__file__))
CACHE = os.environ.get('KVMLAB_CACHE', '/var/cache/kvmnet-lab')
STATE_ROOT = os.environ.get('KVMLAB_STATE', '/var/tmp/kvmnet-lab')
NSPAWN_PROPAGATE = '/run/systemd/nspawn/propagate'
CGROUP_HIERARCHIES = ('/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified')
PUBLIC_GW = '203.0.113.1'
CLIENT_ADDRS = ('203.0.113.50', '203.0.113.51')
PUBLIC_GW6 = '2001:db8:113::1'
CLIENT_ADDRS6 = ('2001:db8:113::50',)
GUEST_NET6 = ('2001:db8:122::1', 64)  # libvirt's default network in the flavour nft (guests: SLAAC)
REPO_PORT = 8080
DEFAULT_HVS = ('hv1:bookworm', 'hv2:trixie')
ROLES = ('pub', 'cli')  # the namespaces NAME-pub and NAME-cli
# SUITE-FLAVOUR in --hv NAME:SUITE-FLAVOUR: what prepare_rootfs() changes on top of the suite's image
FLAVOURS = {
    'nft': "libvirt's nftables firewall backend (lab-only tc wrapper), nftables.service enabled, IPv6",
}
# The flavour nft only, and only in this lab: libvirt 11.3's nftables backend adds `tc filter ... action
# csum` to its bridge in the same transaction as its rules, and this machine's kernel has no act_csum
# (CONFIG_NET_ACT_CSUM), so the network would not start. The real tc is diverted to tc.distrib.
TC_WRAPPER = """#!/bin/sh
# kvmnet lab only (tests/lab/lab.py, flavour nft): this kernel has no act_csum, and libvirt's nftables
# backend adds a `tc filter ... action csum` that would stop its network from starting. Skip that one.
case " $* " in *" action csum "*) exit 0 ;; esac
exec /usr/sbin/tc.distrib "$@"
"""


class LabError(Exception):
    pass


def log(msg):
    print(f'[lab {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def run(cmd, check=True, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if check and proc.returncode != 0:
        raise LabError(f'{" ".join(cmd)} failed (rc={proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}')
    return proc


def hv_address(index):
    return f'203.0.113.{10 + index}'


def hv_address6(index):
    return f'2001:db8:113::{10 + index}'


def parse_hv(spec, index):
    """NAME:SUITE[-FLAVOUR] -> the hypervisor's description in the lab's state."""
    hv, _sep, suite = spec.partition(':')
    suite, _sep, flavour = (suite or 'bookworm').partition('-')
    if flavour and flavour not in FLAVOURS:
        raise LabError(f'--hv {spec}: unknown flavour {flavour!r} (known: {", ".join(sorted(FLAVOURS))})')
    if flavour == 'nft' and suite == 'bookworm':
        raise LabError(f'--hv {spec}: libvirt 9 (Debian 12) has no nftables firewall backend')
    return {'name': hv, 'suite': suite, 'flavour': flavour, 'index': index, 'address': hv_address(index),
            'address6': hv_address6(index) if flavour == 'nft' else None}


def guests_of(index, flavour=''):
    """The lab's guests on hypervisor number INDEX (1-based). With IPv6 (flavour nft) appNN has a fixed MAC
    as well: its SLAAC address (ipv6_of) is then known before it boots."""
    return [
        {'name': f'web{index:02d}', 'mac': f'52:54:00:4b:{index:02x}:10', 'ip': '192.168.122.10'},
        {'name': f'app{index:02d}', 'mac': f'52:54:00:4b:{index:02x}:20' if flavour == 'nft' else None, 'ip': None},
    ]


def ipv6_of(mac, network=GUEST_NET6):
    """The SLAAC (EUI-64) address a guest with MAC takes in libvirt's IPv6 network (address, prefix)."""
    octets = [int(x, 16) for x in mac.split(':')]
    eui = [octets[0] ^ 0x02, *octets[1:3], 0xff, 0xfe, *octets[3:]]
    net = ipaddress.IPv6Network(f'{network[0]}/{network[1]}', strict=False)
    return str(net.network_address + int.from_bytes(bytes(eui), 'big'))


def domain_xml(guest):
    mac = f"<mac address='{guest['mac']}'/>" if guest['mac'] else ''
    return f"""<domain type='qemu'>
  <name>{guest['name']}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>/var/lib/libvirt/images/kvmlab-vmlinuz</kernel>
    <initrd>/var/lib/libvirt/images/kvmlab-initrd.gz</initrd>
    <cmdline>console=ttyS0 quiet kvmname={guest['name']}</cmdline>
  </os>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <interface type='network'>
      <source network='default'/>{mac}
      <model type='virtio'/>
      <rom enabled='no'/>
    </interface>
    <serial type='file'><source path='/var/log/libvirt/qemu/{guest['name']}.console'/></serial>
  </devices>
</domain>
"""


def source_hash(*names):
    digest = hashlib.sha256()
    for name in names:
        with open(os.path.join(HERE, name), 'rb') as f:
            digest.update(f.read())
    return digest.hexdigest()[:8]


# ---------------------------------------------------------------- the root namespace's baseline

def root_snapshot():
    """What the lab must leave exactly as it found it in the machine's own network namespace."""
    snap = {}
    for tool in ('iptables-save', 'ip6tables-save', 'iptables-legacy-save', 'ip6tables-legacy-save'):
        if shutil.which(tool):
            out = run([tool], check=False).stdout
            snap[tool] = '\n'.join(l for l in out.splitlines() if not l.startswith('#'))
    if shutil.which('nft'):
        snap['nft'] = run(['nft', 'list', 'ruleset'], check=False).stdout
    snap['routes4'] = run(['ip', '-4', 'route', 'show', 'table', 'all']).stdout
    snap['routes6'] = run(['ip', '-6', 'route', 'show', 'table', 'all']).stdout
    snap['links'] = sorted(run(['ip', '-o', 'link', 'show']).stdout.split('\n'))
    snap['links'] = [l.split(':')[1].strip() for l in snap['links'] if l]
    for key in ('net/ipv4/ip_forward', 'net/ipv6/conf/all/forwarding', 'net/bridge/bridge-nf-call-iptables'):
        with contextlib.suppress(OSError), open(f'/proc/sys/{key}') as f:
            snap[key] = f.read().strip()
    with contextlib.suppress(OSError):
        st = os.stat('/dev/kvm')
        snap['/dev/kvm'] = f'{st.st_mode:o} {st.st_uid}:{st.st_gid}'
    return snap


def compare_snapshots(before, after):
    return [f'{key}: was {before.get(key)!r}, now {after.get(key)!r}'
            for key in sorted(set(before) | set(after)) if before.get(key) != after.get(key)]


# ---------------------------------------------------------------- state

class Lab:
    def __init__(self, name):
        if not name.isalnum() or len(name) > 8:
            raise LabError(f'lab name {name!r}: letters and digits, at most 8')
        self.name = name
        self.dir = os.path.join(STATE_ROOT, name)
        self.state_file = os.path.join(self.dir, 'state.json')
        self.pub = f'{name}-pub'
        self.cli = f'{name}-cli'
        self.net = None  # the Topology switch() built in this process
        self.state = None
        if os.path.exists(self.state_file):
            with open(self.state_file) as f:
                self.state = json.load(f)

    def save(self):
        with open(self.state_file + '.tmp', 'w') as f:
            json.dump(self.state, f, indent=2)
        os.replace(self.state_file + '.tmp', self.state_file)

    @property
    def key(self):
        return os.path.join(self.dir, 'id_ed25519')

    @property
    def ssh_config(self):
        return os.path.join(self.dir, 'ssh_config')

    def hv_dir(self, hv):
        return os.path.join(self.dir, hv)

    def ssh(self, hv, *cmd, check=True, timeout=600):
        return run(['ssh', '-F', self.ssh_config, hv, *cmd], check=check, timeout=timeout)

    # ---------------------------------------------------------------- up
    def up(self, hvs, guests=True):
        if self.state:
            raise LabError(f'lab {self.name} is already up ({self.dir}); run "down" first')
        require_topology()
        if os.geteuid() != 0:
            raise LabError('the lab needs root (namespaces, nspawn)')
        specs = []
        for i, spec in enumerate(hvs, 1):
            specs.append(parse_hv(spec, i))
            specs[-1]['guests'] = guests_of(i, specs[-1]['flavour']) if guests else []
        os.makedirs(self.dir, exist_ok=True)
        self.state = {'name': self.name, 'baseline': root_snapshot(), 'hypervisors': specs,
                      'repo_pid': None, 'supervisors': {}, 'started': time.time()}
        self.save()
        self.images({s['suite'] for s in specs})
        run(['ssh-keygen', '-q', '-t', 'ed25519', '-N', '', '-C', f'kvmnet-lab-{self.name}', '-f', self.key])
        self.write_ssh_config()
        self.switch()
        for spec in specs:
            self.prepare_rootfs(spec)
            self.start(spec['name'])
        for spec in specs:
            self.wait_ssh(spec['name'])
        log('hypervisors up; defining and starting guests (TCG boots take a while)')
        procs = {s['name']: subprocess.Popen(['ssh', '-F', self.ssh_config, s['name'], 'kvmlab-provision'],
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for s in specs}
        failed = []
        for hv, proc in procs.items():
            out, err = proc.communicate(timeout=400)
            if proc.returncode:
                failed.append(f'{hv}: {err.strip() or out.strip()}')
            for line in out.split('\n'):
                if line:
                    log(f'{hv}: guest {line}')
        if failed:
            raise LabError('guest provisioning failed: ' + '; '.join(failed))
        self.write_inventory()
        log(f'lab {self.name} is up: {len(specs)} hypervisors, client {CLIENT_ADDRS[0]}')

    def image(self, suite):
        return os.path.join(CACHE, 'images', f'{suite}-{self.image_version()}.tar.zst')

    def images(self, suites):
        """Build the missing images (in parallel: mostly downloads and unpacking) and the guest."""
        missing = sorted(suite for suite in suites if not os.path.exists(self.image(suite)))
        builds = [self.build('build-image', suite, wait=False) for suite in missing]
        self.build('build-guest')
        failed = [' '.join(proc.args[1:]) for proc in builds if proc.wait() != 0]
        if failed:
            raise LabError(f'image build failed: {", ".join(failed)} (logs in {CACHE}/build/)')

    @staticmethod
    def image_version():
        return source_hash('build-image')

    @staticmethod
    def guest_dir():
        """Cached guest kernel and initramfs, keyed by the sources that make them."""
        return os.path.join(CACHE, 'guest-' + source_hash('build-guest', 'guest/init', 'guest/udhcpc.script',
                                                          'guest/answerd.c', 'guest/mkinitramfs.py'))

    def build(self, script, *args, wait=True):
        env = dict(os.environ, KVMLAB_CACHE=CACHE, KVMLAB_VERSION=self.image_version(),
                   KVMLAB_GUEST_DIR=self.guest_dir())
        # pylint: disable-next=consider-using-with  # waited for by images() when wait=False
        proc = subprocess.Popen([os.path.join(HERE, script), *args], env=env, text=True,
                                stdout=sys.stdout, stderr=subprocess.STDOUT)
        if wait and proc.wait() != 0:
            raise LabError(f'{script} {" ".join(args)} failed (rc={proc.returncode})')
        return proc

    def write_ssh_config(self):
        proxy = f'{sys.executable} {os.path.join(HERE, "netns_proxy.py")} {self.pub} %h %p'
        lines = [f'Host {s["name"]}\n  HostName {s["address"]}\n' for s in self.state['hypervisors']]
        lines.append(f'Host *\n  User root\n  IdentityFile {self.key}\n  IdentitiesOnly yes\n'
                     f'  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n'
                     f'  ConnectTimeout 10\n  ProxyCommand {proxy}\n')
        with open(self.ssh_config, 'w') as f:
            f.write(''.join(lines))

    def write_inventory(self):
        """An Ansible inventory of the lab's hypervisors (the demo and the tests start from it)."""
        hosts = {s['name']: {'ansible_host': s['address'], 'ansible_user': 'root',
                             'ansible_ssh_private_key_file': self.key,
                             'ansible_ssh_common_args': f'-F {self.ssh_config}',
                             'ansible_python_interpreter': '/usr/bin/python3', 'kvmlab_suite': s['suite'],
                             'kvmlab_flavour': s.get('flavour', '')}
                 for s in self.state['hypervisors']}
        for s in self.state['hypervisors']:
            if s.get('address6'):
                hosts[s['name']]['kvmlab_address6'] = s['address6']
                hosts[s['name']]['kvmlab_guests6'] = {g['name']: ipv6_of(g['mac']) for g in s['guests'] if g['mac']}
        with open(os.path.join(self.dir, 'hosts.json'), 'w') as f:
            json.dump({'hypervisors': {'hosts': hosts}}, f, indent=2)

    def switch(self):
        """The switch and client namespaces, left up for the lab's life; down() removes them."""
        log(f'lab switch: netns {self.pub} (br0 {PUBLIC_GW}/24), client netns {self.cli}')
        net = self.net = topology.Topology(self.name, ROLES)
        try:
            net.up()
            net.x('pub', 'ip', 'link', 'add', 'br0', 'type', 'bridge')
            net.x('pub', 'ip', 'addr', 'add', f'{PUBLIC_GW}/24', 'dev', 'br0')
            net.x('pub', 'ip', 'addr', 'add', f'{PUBLIC_GW6}/64', 'dev', 'br0', 'nodad')
            net.x('pub', 'ip', 'link', 'set', 'br0', 'up')
            net.link('cli', 'eth0', 'pub', 'cli0')
            for addr in CLIENT_ADDRS:
                net.x('cli', 'ip', 'addr', 'add', f'{addr}/24', 'dev', 'eth0')
            for addr in CLIENT_ADDRS6:
                net.x('cli', 'ip', 'addr', 'add', f'{addr}/64', 'dev', 'eth0', 'nodad')
            net.x('cli', 'ip', 'link', 'set', 'eth0', 'up')
            net.x('pub', 'ip', 'link', 'set', 'cli0', 'master', 'br0', 'up')
            with open(os.path.join(self.dir, 'repo.log'), 'w') as logf:
                repo = net.spawn('pub', [sys.executable, '-m', 'http.server', '--bind', PUBLIC_GW,
                                         '--directory', os.path.join(CACHE, 'repo'), str(REPO_PORT)],
                                 stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
        except topology.TopologyError as e:
            raise LabError(str(e)) from e
        self.state['repo_pid'] = repo.pid
        self.save()

    def prepare_rootfs(self, spec):
        hv = spec['name']
        root = os.path.join(self.hv_dir(hv), 'root')
        log(f'{hv}: unpacking the Debian {spec["suite"]} image')
        os.makedirs(root)
        run(['tar', '-C', root, '--numeric-owner', '--xattrs', '-I', 'zstd', '-xf', self.image(spec['suite'])])
        run(['cp', '-a', os.path.join(HERE, 'rootfs') + '/.', root + '/'])
        wants = os.path.join(root, 'etc/systemd/system/multi-user.target.wants')
        for unit in ('kvmlab-net.service', 'kvmlab-web.service'):
            with contextlib.suppress(FileExistsError):
                os.symlink(f'/etc/systemd/system/{unit}', os.path.join(wants, unit))
        files = {
            'etc/hostname': f'{hv}\n',
            'etc/hosts': f'127.0.0.1 localhost\n{spec["address"]} {hv}\n',
            'etc/kvmlab/net.env': f'ADDRESS={spec["address"]}/24\nGATEWAY={PUBLIC_GW}\n',
        }
        for guest in spec['guests']:
            files[f'etc/kvmlab/guests/{guest["name"]}.xml'] = domain_xml(guest)
            if guest['ip']:  # a DHCP reservation
                files[f'etc/kvmlab/guests/{guest["name"]}.dhcp'] = \
                    f"<host mac='{guest['mac']}' name='{guest['name']}' ip='{guest['ip']}'/>"
        for rel, text in files.items():
            path = os.path.join(root, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, 'w') as f:
                f.write(text)
        if spec.get('flavour') == 'nft':
            self.flavour_nft(spec, root)
        with open(self.key + '.pub') as src, open(os.path.join(root, 'root/.ssh/authorized_keys'), 'w') as dst:
            dst.write(src.read())
        os.chmod(os.path.join(root, 'root/.ssh/authorized_keys'), 0o600)
        for name in ('vmlinuz', 'initrd.gz'):
            shutil.copy(os.path.join(self.guest_dir(), name), os.path.join(root, f'var/lib/libvirt/images/kvmlab-{name}'))

    @staticmethod
    def flavour_nft(spec, root):
        """libvirt's nftables firewall backend, Debian's nftables.service enabled, IPv6 (see FLAVOURS)."""
        log(f'{spec["name"]}: flavour nft (libvirt nftables backend, lab-only tc wrapper, nftables.service, IPv6)')
        with open(os.path.join(root, 'etc/libvirt/network.conf'), 'a') as f:
            f.write('\n# kvmnet lab, flavour nft\nfirewall_backend = "nftables"\n')
        # dpkg-divert only edits dpkg's database in the rootfs; still, no network for it
        run(['unshare', '--net', '--fork', 'chroot', root, 'dpkg-divert', '--local', '--rename', '--add', '/usr/sbin/tc'])
        with open(os.path.join(root, 'usr/sbin/tc'), 'w') as f:
            f.write(TC_WRAPPER)
        os.chmod(os.path.join(root, 'usr/sbin/tc'), 0o755)
        wants = os.path.join(root, 'etc/systemd/system/sysinit.target.wants')
        os.makedirs(wants, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.symlink('/usr/lib/systemd/system/nftables.service', os.path.join(wants, 'nftables.service'))
        dropin = os.path.join(root, 'etc/systemd/system/kvmlab-net.service.d')
        os.makedirs(dropin, exist_ok=True)
        with open(os.path.join(dropin, 'ipv6.conf'), 'w') as f:
            f.write(f'[Service]\nExecStart=ip -6 addr add {spec["address6"]}/64 dev host0 nodad\n')
        network = os.path.join(root, 'etc/libvirt/qemu/networks/default.xml')
        with open(network) as f:
            xml = f.read()
        address, prefix = GUEST_NET6
        with open(network, 'w') as f:
            f.write(xml.replace('</network>', f"  <ip family='ipv6' address='{address}' prefix='{prefix}'/>\n</network>"))

    def start(self, hv):
        logf = open(os.path.join(self.hv_dir(hv), 'console.log'), 'a')
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), '--name', self.name, 'supervise', hv],
                                stdout=logf, stderr=logf, stdin=subprocess.DEVNULL, start_new_session=True)
        self.state['supervisors'][hv] = proc.pid
        self.save()
        log(f'{hv}: booting (supervisor pid {proc.pid})')

    def wait_ssh(self, hv, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ssh(hv, 'true', check=False, timeout=20).returncode == 0:
                log(f'{hv}: ssh answers')
                return
            if not pid_alive(self.state['supervisors'].get(hv)):
                raise LabError(f'{hv}: the container stopped; see {self.hv_dir(hv)}/console.log')
            time.sleep(1)
        raise LabError(f'{hv}: no ssh after {timeout} s; see {self.hv_dir(hv)}/console.log')

    # ---------------------------------------------------------------- supervise (one per hypervisor)
    def supervise(self, hv):
        """Boot HV again and again while it reboots (nspawn exits 133); stop on SIGTERM."""
        for hierarchy in CGROUP_HIERARCHIES:
            cg = os.path.join(hierarchy, 'kvmnet-lab', f'{self.name}-{hv}')
            os.makedirs(cg, exist_ok=True)
            with open(os.path.join(cg, 'cgroup.procs'), 'w') as f:
                f.write(str(os.getpid()))
        child = None
        stopping = False

        def on_term(_signum, _frame):
            nonlocal stopping
            stopping = True
            if child and child.poll() is None:
                child.send_signal(signal.SIGTERM)

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        boot = 0
        while not stopping:
            boot += 1
            print(f'=== kvmnet lab: boot {boot} of {hv} at {time.strftime("%H:%M:%S")}', flush=True)
            child = subprocess.Popen(
                ['nsenter', f'--net=/run/netns/{self.pub}', 'systemd-nspawn', '--boot', '--register=no',
                 '--keep-unit', '--network-bridge=br0', '--capability=all', '--bind=/dev/net/tun',
                 '--link-journal=no', '--console=read-only', '-M', hv,
                 '-D', os.path.join(self.hv_dir(hv), 'root')], stdin=subprocess.DEVNULL)
            rc = child.wait()
            print(f'=== kvmnet lab: {hv} exited with {rc}', flush=True)
            if rc != 133:
                break

    # ---------------------------------------------------------------- down
    def down(self):
        require_topology()
        problems = []
        state = self.state or {}
        for hv, pid in (state.get('supervisors') or {}).items():
            if pid_alive(pid):
                log(f'{hv}: shutting down')
                os.kill(pid, signal.SIGTERM)
        for hv, pid in (state.get('supervisors') or {}).items():
            if not wait_pid(pid, 60):
                problems.append(f'{hv}: container did not stop in 60 s; killed its processes')
                kill_cgroup(self.name, hv)
                wait_pid(pid, 10)
        for hv in (state.get('supervisors') or {}):
            kill_cgroup(self.name, hv)
            remove_cgroup(self.name, hv)
            remove_nspawn_leftover(hv)
        try:  # what switch() built, also half-way
            if self.net:  # a failed `up` in this process: its repository also while it is still starting
                self.net.down()
            topology.Topology.existing(self.name, ROLES, pids=[state.get('repo_pid')]).down()
        except topology.TopologyError as e:
            problems.append(str(e))
        if os.path.isdir(self.dir):
            self.keep_logs()
            if not any(pid_alive(pid) for pid in (state.get('supervisors') or {}).values()):
                shutil.rmtree(self.dir, ignore_errors=True)
        if state.get('baseline'):
            problems += compare_snapshots(state['baseline'], root_snapshot())
        if problems:
            raise LabError('the lab did not leave the machine as it found it:\n  ' + '\n  '.join(problems))
        log(f'lab {self.name} is down; the root namespace is as before')

    def keep_logs(self):
        """Logs outlive the lab, for a failed run: STATE_ROOT/NAME.logs/."""
        dest = self.dir + '.logs'
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        for dirpath, _dirs, filenames in os.walk(self.dir):
            if os.path.join(self.dir, '') not in dirpath + '/' or '/root' in dirpath[len(self.dir):]:
                continue
            for fn in filenames:
                if fn.endswith('.log'):
                    rel = os.path.relpath(os.path.join(dirpath, fn), self.dir).replace('/', '-')
                    shutil.copy(os.path.join(dirpath, fn), os.path.join(dest, rel))

    def status(self):
        if not self.state:
            print(f'lab {self.name}: down')
            return 1
        print(f'lab {self.name}: state {self.dir}, switch netns {self.pub}, client netns {self.cli} '
              f'({", ".join(CLIENT_ADDRS)})')
        for s in self.state['hypervisors']:
            alive = pid_alive(self.state['supervisors'].get(s['name']))
            guests = ''
            if alive:
                out = self.ssh(s['name'], 'virsh', '-q', '-c', 'qemu:///system', 'list', '--all',
                               check=False, timeout=30).stdout
                guests = ', '.join(' '.join(l.split()[1:]) for l in out.splitlines() if l.strip())
            suite = s['suite'] + (f'-{s["flavour"]}' if s.get('flavour') else '')
            print(f'  {s["name"]:6} {s["address"]:14} debian {suite:12} '
                  f'{"running" if alive else "STOPPED"}  guests: {guests or "-"}')
        return 0


# ---------------------------------------------------------------- namespaces, processes and cgroups

def require_topology():
    """`up` and `down` make and remove the namespaces with tests/support/topology.py."""
    if TOPOLOGY_MISSING:
        raise LabError(f'cannot import tests/support/topology.py ({TOPOLOGY_MISSING}): run lab.py with the '
                       'collections root on PYTHONPATH, as make does (PYTHONPATH=$(COLL_ROOT))')


def pid_alive(pid):
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError), open(f'/proc/{pid}/stat') as f:
        if f.read().split(') ')[1].startswith('Z'):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            return False
    return True


def wait_pid(pid, timeout):
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def cgroup_dirs(name, hv):
    """The hypervisor's cgroups, deepest first."""
    dirs = []
    for hierarchy in CGROUP_HIERARCHIES:
        top = os.path.join(hierarchy, 'kvmnet-lab', f'{name}-{hv}')
        for dirpath, _dirs, _files in os.walk(top):
            dirs.append(dirpath)
    return sorted(dirs, key=lambda d: -d.count('/'))


def kill_cgroup(name, hv):
    for d in cgroup_dirs(name, hv):
        with contextlib.suppress(OSError), open(os.path.join(d, 'cgroup.procs')) as f:
            for pid in f.read().split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)


def remove_nspawn_leftover(machine):
    """nspawn makes /run/systemd/nspawn/propagate/MACHINE and, where /run is not a tmpfs, refuses to
    remove it on exit ("Attempted to remove disk file system"): an empty directory left behind."""
    with contextlib.suppress(OSError):
        os.rmdir(os.path.join(NSPAWN_PROPAGATE, machine))


def remove_cgroup(name, hv):
    for d in cgroup_dirs(name, hv):
        with contextlib.suppress(OSError):
            os.rmdir(d)
    for hierarchy in CGROUP_HIERARCHIES:
        with contextlib.suppress(OSError):
            os.rmdir(os.path.join(hierarchy, 'kvmnet-lab'))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--name', default=os.environ.get('KVMLAB_NAME', 'kvmlab'))
    sub = ap.add_subparsers(dest='cmd', required=True)
    up = sub.add_parser('up')
    up.add_argument('--hv', action='append', help='NAME:SUITE[-FLAVOUR] (repeatable; flavours: '
                    + ', '.join(f'{k}: {v}' for k, v in FLAVOURS.items()) + '); default hv1:bookworm hv2:trixie')
    up.add_argument('--no-guests', action='store_true', help='libvirt and its default network, but no guest VMs')
    sub.add_parser('down')
    sub.add_parser('status')
    images = sub.add_parser('images')
    images.add_argument('suites', nargs='*', default=['bookworm', 'trixie'])
    ssh = sub.add_parser('ssh')
    ssh.add_argument('hv')
    ssh.add_argument('command', nargs=argparse.REMAINDER)
    client = sub.add_parser('client', help='run a command in the client namespace')
    client.add_argument('command', nargs=argparse.REMAINDER)
    sup = sub.add_parser('supervise')
    sup.add_argument('hv')
    sub.add_parser('inventory')
    args = ap.parse_args(argv)
    lab = Lab(args.name)
    try:
        if args.cmd == 'up':
            try:
                lab.up(args.hv or list(DEFAULT_HVS), guests=not args.no_guests)
            except BaseException:
                log('up failed; tearing the lab down again')
                with contextlib.suppress(LabError):
                    lab.down()
                raise
        elif args.cmd == 'down':
            lab.down()
        elif args.cmd == 'status':
            return lab.status()
        elif args.cmd == 'images':
            lab.images(args.suites)
        elif args.cmd == 'ssh':
            os.execvp('ssh', ['ssh', '-F', lab.ssh_config, args.hv, *args.command])
        elif args.cmd == 'client':
            os.execvp('ip', ['ip', 'netns', 'exec', lab.cli, *args.command])
        elif args.cmd == 'supervise':
            lab.supervise(args.hv)
        elif args.cmd == 'inventory':
            print(os.path.join(lab.dir, 'hosts.json'))
    except LabError as e:
        print(f'lab: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
