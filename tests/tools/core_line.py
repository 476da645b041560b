# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Run ansible-test units, sanity and the nft namespace tests on another ansible-core release line.

ansible-core 2.20 and later need Python >= 3.12; Debian 12 has 3.11. The lab's cached Debian 13
image has Python 3.13 (no ensurepip): it is unpacked once into a root under the lab cache, the
wheels for the line are fetched on this host for Python 3.13, and a venv inside the root gets them.
Every step runs in that root with systemd-nspawn: units and sanity share this machine's network
(for ansible-test's own pip installs) but not its capabilities to change it (nspawn drops
CAP_NET_ADMIN without a private network); the namespace tests run with a private network, so
everything they do to netfilter happens inside the container's namespaces.

    core_line.py --core 'ansible-core>=2.21,<2.22' --collection DIR units sanity netns
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get('KVMLAB_CACHE', '/var/cache/kvmnet-lab')
PYTHON = '3.13'
PLATFORMS = ['manylinux2014_x86_64', 'manylinux_2_17_x86_64', 'manylinux_2_28_x86_64']
HOST_CA = '/etc/ssl/certs/ca-certificates.crt'
# what the steps need besides ansible-core: the role's filters (jmespath), the namespace tests (pytest)
EXTRA = ['jmespath', 'pytest']
# the namespace tests this line runs (see main)
NETNS_SELECTION = '(nft or playbooks) and not test_hook_netns and not test_doctor_netns'


def log(text):
    print('core-line: %s' % text, flush=True)


def run(cmd, **kw):
    log(' '.join(cmd) if len(' '.join(cmd)) < 300 else ' '.join(cmd)[:300] + ' ...')
    return subprocess.run(cmd, check=True, **kw)


def image():
    """The lab's Debian 13 image (built by lab.py when it is not cached yet) and its version."""
    sys.path.insert(0, os.path.join(REPO, 'tests', 'lab'))
    import lab  # pylint: disable=import-outside-toplevel
    version = lab.Lab.image_version()
    path = os.path.join(CACHE, 'images', 'trixie-%s.tar.zst' % version)
    if not os.path.exists(path):
        run([sys.executable, os.path.join(REPO, 'tests', 'lab', 'lab.py'), 'images', 'trixie'])
    return path, version


def prepare_root(image_path, version):
    """The unpacked image, once per image version."""
    root = os.path.join(CACHE, 'core-lines', 'trixie-%s' % version)
    if os.path.exists(os.path.join(root, '.kvmnet-ready')):
        return root
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    run(['tar', '-C', root, '--numeric-owner', '-I', 'zstd', '-xf', image_path])
    with open(os.path.join(root, '.kvmnet-ready'), 'w') as handle:
        handle.write('%s\n' % time.strftime('%Y-%m-%d %H:%M:%S'))
    return root


CGROUPS = [os.path.join(h, 'kvmnet-lab', 'core-line') for h in ('/sys/fs/cgroup/systemd', '/sys/fs/cgroup/unified')]


def own_cgroup():
    """Without a host systemd, nspawn needs --keep-unit, and a cgroup of its own so that it does not
    collide with a lab container (docs/lab.md); run in the child before exec."""
    for cgroup in CGROUPS:
        if os.path.isdir(os.path.dirname(os.path.dirname(cgroup))):
            os.makedirs(cgroup, exist_ok=True)
            with open(os.path.join(cgroup, 'cgroup.procs'), 'w') as handle:
                handle.write(str(os.getpid()))


def nspawn(root, cmd, private_network=False, chdir='/', env=None, check=True):
    argv = ['systemd-nspawn', '--quiet', '--register=no', '--keep-unit', '-M', 'kvmnet-core-line', '--as-pid2',
            '-D', root, '--chdir=' + chdir,
            '--bind-ro=%s:/etc/ssl/certs/kvmnet-host-ca.crt' % HOST_CA]
    if private_network:
        argv.append('--private-network')
    for key, value in (env or {}).items():
        argv.append('--setenv=%s=%s' % (key, value))
    log('[%s] %s' % ('private network' if private_network else 'no CAP_NET_ADMIN', ' '.join(cmd)))
    try:
        return subprocess.run(argv + ['--'] + cmd, check=check, preexec_fn=own_cgroup).returncode
    finally:
        remove_leftovers()


def remove_leftovers():
    """The cgroups (nspawn adds payload/ and supervisor/ under ours), deepest first, their parent
    when no lab uses it, and the propagate directory nspawn cannot remove where /run is not a tmpfs
    (docs/lab.md)."""
    dirs = []
    for cgroup in CGROUPS:
        dirs += sorted((path for path, _sub, _files in os.walk(cgroup)), key=lambda d: -d.count('/'))
        dirs.append(os.path.dirname(cgroup))
    for leftover in dirs + ['/run/systemd/nspawn/propagate/kvmnet-core-line']:
        try:
            os.rmdir(leftover)
        except OSError:
            pass


def prepare_venv(root, core):
    """/opt/core-<hash>: a venv with the wheels of this line, fetched on this host for Python 3.13."""
    key = hashlib.sha256(('%s|%s' % (core, ' '.join(EXTRA))).encode()).hexdigest()[:12]
    venv = '/opt/core-%s' % key
    if os.path.exists(os.path.join(root, venv.lstrip('/'), '.kvmnet-ready')):
        return venv
    wheels = os.path.join(root, 'opt', 'wheels-%s' % key)
    shutil.rmtree(wheels, ignore_errors=True)
    platforms = [word for p in PLATFORMS for word in ('--platform', p)]
    run([sys.executable, '-m', 'pip', 'download', '-q', '--python-version', PYTHON, '--implementation', 'cp',
         '--only-binary=:all:', *platforms, '-d', wheels, 'pip', core, *EXTRA])
    pip_wheel = os.path.basename(glob.glob(os.path.join(wheels, 'pip-*.whl'))[0])
    inside = '/opt/wheels-%s' % key
    nspawn(root, ['/usr/bin/python3', '-m', 'venv', '--without-pip', venv])
    nspawn(root, ['%s/bin/python' % venv, '%s/%s/pip' % (inside, pip_wheel), 'install', '-q', '--no-index',
                  '--find-links', inside, 'pip', core, *EXTRA])
    with open(os.path.join(root, venv.lstrip('/'), '.kvmnet-ready'), 'w') as handle:
        handle.write(core + '\n')
    return venv


def prepare_pip_bootstrap(root, venv):
    """ansible-test bootstraps pip in its venvs with a cached get-pip script: ours (tests/tools/get_pip_standin.py),
    with a pip wheel next to it, as the root has no ensurepip."""
    site = glob.glob(os.path.join(root, venv.lstrip('/'), 'lib', 'python3*', 'site-packages'))[0]
    with open(os.path.join(site, 'ansible_test', '_internal', 'python_requirements.py')) as handle:
        version = re.search(r"pip='([0-9.]+)'", handle.read()).group(1)
    cache = os.path.join(root, 'root', '.ansible', 'test', 'cache')
    os.makedirs(cache, exist_ok=True)
    shutil.copy(os.path.join(HERE, 'get_pip_standin.py'), os.path.join(cache, 'get_pip_%s.py' % version.replace('.', '_')))
    for old in glob.glob(os.path.join(cache, 'pip-*.whl')):
        os.remove(old)
    wheel = glob.glob(os.path.join(root, 'opt', 'wheels-*', 'pip-*.whl'))[0]
    shutil.copy(wheel, cache)


def prepare_pip_config(root):
    """ansible-test runs pip with an environment of its own (PIP_CERT does not reach it): the root's
    pip.conf names this host's CA bundle, bound in by nspawn(), so pip trusts what this host trusts."""
    with open(os.path.join(root, 'etc', 'pip.conf'), 'w') as handle:
        handle.write('[global]\ncert = /etc/ssl/certs/kvmnet-host-ca.crt\ndisable-pip-version-check = true\n')


def copy_collection(root, collection):
    target = os.path.join(root, 'work', 'ansible_collections', 'kvmnet', 'nat')
    os.makedirs(target, exist_ok=True)
    run(['rsync', '-a', '--delete', '--exclude', 'tests/output', collection.rstrip('/') + '/', target + '/'])
    return '/work/ansible_collections/kvmnet/nat'


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', maxsplit=1)[0])
    parser.add_argument('--core', required=True, help="pip requirement, e.g. 'ansible-core>=2.21,<2.22'")
    parser.add_argument('--collection', required=True, help='the collection tree (make collection copies it there)')
    parser.add_argument('steps', nargs='+', choices=['units', 'sanity', 'netns'])
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit('core_line.py needs root (systemd-nspawn)')
    image_path, version = image()
    root = prepare_root(image_path, version)
    venv = prepare_venv(root, args.core)
    prepare_pip_bootstrap(root, venv)
    prepare_pip_config(root)
    where = copy_collection(root, args.collection)
    env = {'PATH': '%s/bin:/usr/sbin:/usr/bin:/sbin:/bin' % venv, 'ANSIBLE_COLLECTIONS_PATH': '/work',
           'PIP_CERT': '/etc/ssl/certs/kvmnet-host-ca.crt', 'PIP_DISABLE_PIP_VERSION_CHECK': '1', 'LANG': 'C.UTF-8',
           'HOME': '/root'}
    nspawn(root, ['ansible', '--version'], env=env)
    failed = []
    for step in args.steps:
        started = time.monotonic()
        if step == 'netns':
            # the nf_tables tests, and the playbooks' (the role and verify on this line's templating); not the
            # hook's (shell and kvmnet-nat-restore: no ansible-core in them) nor the iptables doctor's (the doctor
            # module runs on this line in test_doctor_nft_netns); the collections root on PYTHONPATH for the
            # shared helpers in tests/support, as in the Makefile
            rc = nspawn(root, ['python', '-m', 'pytest', '-p', 'no:cacheprovider', '-q', '-k', NETNS_SELECTION, '.'],
                        private_network=True, chdir=where + '/tests/netns', env=dict(env, PYTHONPATH='/work'),
                        check=False)
        else:
            rc = nspawn(root, ['ansible-test', step, '--python', PYTHON, '--requirements', '--color', 'no'],
                        chdir=where, env=env, check=False)
        log('%s on %s: %s in %.0f s' % (step, args.core, 'passed' if rc == 0 else 'FAILED (rc=%d)' % rc,
                                        time.monotonic() - started))
        if rc != 0:
            failed.append(step)
    if failed:
        sys.exit('core-line: failed on %s: %s' % (args.core, ', '.join(failed)))


if __name__ == '__main__':
    main()
