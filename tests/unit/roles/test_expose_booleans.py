# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""The role's booleans given as text (``-e expose_install_packages=false``) mean what they say (issue 19).

``-e key=value`` gives a string, and the string "false" is true in Jinja. The role's validate, host and
resolve stages run here (with the role's module_defaults) in a real ansible-playbook, on localhost, with a copy of the collection whose
two host-reading modules (host_info, guest_addresses) are stand-ins that answer from a file and record
what they were given; nothing on this machine is read or changed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), '..', '..', '..'))
ROLE = os.path.join(ROOT, 'roles', 'expose')

FAKE = '''#!/usr/bin/python
from __future__ import annotations
import json
import os
from ansible.module_utils.basic import AnsibleModule

SPECS = {'host_info': dict(simulate_install=dict(type='raw'), paths=dict(type='raw'), units=dict(type='raw'),
                           backend=dict(type='raw'), chain_prefix=dict(type='raw')),
         'guest_addresses': dict(names=dict(type='raw'), declared=dict(type='raw'), claimed=dict(type='raw'),
                                 pin=dict(type='raw'), record_path=dict(type='raw'), uri=dict(type='raw'))}


def main():
    name = os.path.basename(__file__)[:-3]
    module = AnsibleModule(argument_spec=SPECS[name], supports_check_mode=True)
    folder = os.environ['KVMNAT_FAKE_DIR']
    with open(os.path.join(folder, name + '.params.json'), 'w') as handle:
        json.dump(module.params, handle)
    with open(os.path.join(folder, name + '.json')) as handle:
        module.exit_json(changed=False, **json.load(handle))


if __name__ == '__main__':
    main()
'''

HOST_INFO = {'default_ipv4': '203.0.113.10', 'netfilter_persistent': {'installed': False}, 'ufw': {'installed': False},
             'firewalld': {'active': False}, 'libvirt_nftables': {'ipv4': False, 'ipv6': False},
             'backend': {'name': 'iptables', 'requested': 'auto', 'reason': 'test', 'libvirt': None, 'problem': None},
             'forward_drops': [],
             'install': {'packages': ['iptables-persistent'], 'would_remove': []},
             'files': {'restore_python': {'exists': True, 'sha256': None}}}
ADDRESSES = {'changes': [], 'record_changed': False, 'guests': [{'name': 'web01', 'ip': '192.168.122.10'}],
             'unresolved': [{'name': 'ghost01', 'reason': 'no libvirt domain of that name on this host'}]}

with open(os.path.join(ROLE, 'tasks', 'main.yml')) as _handle:
    MODULE_DEFAULTS = yaml.safe_load(_handle)[0]['module_defaults']     # each module's arguments, as the role passes them

PLAYBOOK = [{'hosts': 'hv1', 'gather_facts': False, 'module_defaults': MODULE_DEFAULTS, 'tasks': [{'block': [
    {'name': 'Validate', 'ansible.builtin.include_role': {'name': 'kvmnet.nat.expose', 'tasks_from': 'validate.yml'}},
    {'name': 'Host', 'ansible.builtin.include_role': {'name': 'kvmnet.nat.expose', 'tasks_from': 'host.yml'}},
    {'name': 'Resolve', 'ansible.builtin.include_role': {'name': 'kvmnet.nat.expose', 'tasks_from': 'resolve.yml'}},
], 'always': [
    {'name': 'Keep what the role decided', 'ansible.builtin.copy': {
        'dest': '{{ fake_dir }}/facts.json', 'mode': '0600',
        'content': '{{ {"persistence": __expose_persistence | default(None)} | to_json }}'}},
]}]}]


@pytest.fixture(scope='module')
def collection(tmp_path_factory):
    """A collections path holding kvmnet.nat with stand-ins for the two modules that read the host (and forwards)."""
    base = tmp_path_factory.mktemp('collections')
    nat = base / 'ansible_collections' / 'kvmnet' / 'nat'
    (nat / 'plugins' / 'modules').mkdir(parents=True)
    for name in ('roles', 'meta', 'galaxy.yml'):
        os.symlink(os.path.join(ROOT, name), str(nat / name))
    for name in ('filter', 'module_utils'):
        os.symlink(os.path.join(ROOT, 'plugins', name), str(nat / 'plugins' / name))
    for name in ('host_info', 'guest_addresses', 'forwards'):
        (nat / 'plugins' / 'modules' / (name + '.py')).write_text(FAKE)
    return base


def run_role(collection, folder, value):
    """The role's validate and resolve stages with each boolean given on the command line as ``value``."""
    (folder / 'host_info.json').write_text(json.dumps(HOST_INFO))
    (folder / 'guest_addresses.json').write_text(json.dumps(ADDRESSES))
    (folder / 'play.yml').write_text(yaml.safe_dump(PLAYBOOK))
    local = {'ansible_connection': 'local', 'ansible_python_interpreter': sys.executable}
    inventory = {'hypervisors': {'hosts': {'hv1': dict(local, expose_guests=[
        {'name': 'web01', 'ip': '192.168.122.10', 'ports': [{'host': 8080, 'guest': 80}]},
        {'name': 'ghost01', 'ports': [{'host': 8081, 'guest': 80}]}])}}}
    (folder / 'inventory.json').write_text(json.dumps(inventory))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(collection), KVMNAT_FAKE_DIR=str(folder), ANSIBLE_NOCOLOR='1',
               ANSIBLE_LOCALHOST_WARNING='0', ANSIBLE_INVENTORY_UNPARSED_WARNING='0', ANSIBLE_RETRY_FILES_ENABLED='0')
    extra = ['-e', 'fake_dir=%s' % folder]
    for name in ('expose_install_packages', 'expose_pin_addresses', 'expose_skip_unresolved'):
        extra += ['-e', '%s=%s' % (name, value)]        # key=value: a string, as on a command line
    command = os.path.join(os.path.dirname(sys.executable), 'ansible-playbook')
    proc = subprocess.run([command, '-i', str(folder / 'inventory.json'), str(folder / 'play.yml')] + extra,
                          capture_output=True, text=True, env=env, timeout=300, check=False)
    output = ' '.join((proc.stdout + proc.stderr).split())

    def read(name):
        return json.loads((folder / name).read_text())

    return proc.returncode, output, read('host_info.params.json'), read('guest_addresses.params.json'), read('facts.json')


@pytest.mark.parametrize('value, meaning', [('false', False), ('False', False), ('no', False), ('0', False),
                                            ('true', True), ('yes', True)])
def test_every_role_boolean_given_as_text_means_what_it_says(collection, tmp_path, value, meaning):
    rc, output, host_info, addresses, facts = run_role(collection, tmp_path, value)
    # expose_install_packages: no package simulated, and the role's own unit persists the rules
    assert host_info['simulate_install'] == (['iptables-persistent'] if meaning else [])
    assert facts['persistence'] == ('netfilter-persistent' if meaning else 'unit')
    # expose_pin_addresses: the module is asked to pin, or not, with a real boolean
    assert addresses['pin'] is meaning
    # expose_skip_unresolved: an unresolved guest stops the run unless skipping was asked for
    stopped = 'hv1: nothing was changed, these guests have no address: ghost01' in output
    assert (rc != 0, stopped) == (not meaning, not meaning), output[-3000:]
    assert ('Skipped, no address: ghost01' in output) is meaning, output[-3000:]


def _booleans():
    with open(os.path.join(ROLE, 'meta', 'argument_specs.yml')) as handle:
        options = yaml.safe_load(handle)['argument_specs']['main']['options']
    return sorted(name for name, spec in options.items() if spec.get('type') == 'bool')


def _expressions(node, key=None):
    """Every Jinja expression of a task file: each ``when`` and each ``{{ ... }}``."""
    if isinstance(node, dict):
        for child_key, child in node.items():
            yield from _expressions(child, child_key)
    elif isinstance(node, list):
        for child in node:
            yield from _expressions(child, key)
    elif isinstance(node, str):
        if key in ('when', 'changed_when', 'failed_when', 'that'):
            yield node
        yield from re.findall(r'\{\{(.*?)\}\}', node, re.DOTALL)
        yield from re.findall(r'\{%(.*?)%\}', node, re.DOTALL)


def test_the_role_has_the_booleans_this_guard_knows():
    assert _booleans() == ['expose_install_packages', 'expose_pin_addresses', 'expose_skip_unresolved']


@pytest.mark.parametrize('path', sorted(
    [os.path.join(ROLE, 'tasks', name) for name in os.listdir(os.path.join(ROLE, 'tasks'))]
    + [os.path.join(ROOT, 'playbooks', name) for name in os.listdir(os.path.join(ROOT, 'playbooks'))]))
def test_every_boolean_read_in_a_task_goes_through_the_bool_filter(path):
    with open(path) as handle:
        tasks = yaml.safe_load(handle)
    bare = []
    for expression in _expressions(tasks):
        for name in _booleans() + ['doctor_probe']:      # doctor_probe: the doctor playbook's own boolean
            bare.extend(re.findall(r'\b%s\b(?!\s*(?:\|\s*default\([^)]*\)\s*)?\|\s*bool)' % name, expression))
    assert bare == []
