#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r"""
module: persistence
short_description: Install the pieces that keep kvmnet.nat's forwards across reboots and libvirt rebuilds
version_added: 1.0.0
description:
  - Used by the role M(kvmnet.nat.expose), which renders the pieces from its templates; one call installs
    them all. Each file in O(files) is written only when its content or mode differs, through a new
    temporary file renamed into place. Files in O(remove) (the pieces of a mechanism the host does not
    use) are removed.
  - O(unit) is enabled (with a daemon reload when its file changed, and C(systemctl reenable) when it was
    enabled already, so that a changed C(WantedBy=) takes effect); it is not started, the rules are
    live already. O(libvirt_hook) names the libvirt network hook among O(files); when it did not exist
    before, the active units in O(libvirt_units) are reloaded (SIGHUP), because libvirt looks for hooks
    at start and on reload only. O(sysctl_file), among O(files), is applied with C(sysctl -p) when the
    live forwarding setting it turns on is off.
  - A systemd unit file that is removed (with O(state=absent), or listed in O(remove)) is disabled first.
  - With O(state=absent), every file in O(files) and O(remove) is removed, then the directories in O(prune)
    that are left empty.
author:
  - kvmnet.nat maintainers (!UNKNOWN)
attributes:
  check_mode:
    support: full
    description: Reports what would be written, removed, enabled or reloaded; changes nothing.
  diff_mode:
    support: full
    description: The content of each file before and after.
  idempotent:
    support: full
    description: Files already right report C(changed=false).
  platform:
    platforms: posix
    support: full
    description: Linux with systemd (for O(unit) and O(libvirt_units)).
options:
  state:
    description: V(present) installs O(files); V(absent) removes them and O(remove).
    type: str
    choices: [present, absent]
    default: present
  files:
    description: The pieces, each with its absolute C(path), its C(content) and its C(mode).
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: Absolute path; its directory is created (mode 0755) when missing.
        type: path
        required: true
      content:
        description: What the file holds (not needed with O(state=absent)).
        type: str
        default: ""
      mode:
        description: Octal mode, like V("0755").
        type: str
        default: "0644"
  remove:
    description: Files to remove (another mechanism's pieces).
    type: list
    elements: path
    default: []
  directories:
    description: Directories to create (mode 0755) when missing, with V(present); never removed.
    type: list
    elements: path
    default: []
  prune:
    description:
      - With V(absent), directories to remove when they are empty once the files of this call are removed,
        in the order given (deepest first). A directory that holds anything else, or is a symlink, is left.
      - Ignored with V(present).
    type: list
    elements: path
    default: []
    version_added: 1.1.0
  unit:
    description: A systemd unit among O(files) to enable (only with V(present)).
    type: str
  libvirt_hook:
    description: The path of the libvirt network hook among O(files).
    type: path
  libvirt_units:
    description: libvirt's network daemons, reloaded when the hook is new and they are active.
    type: list
    elements: str
    default: [libvirtd.service, virtnetworkd.service]
  sysctl_file:
    description: The sysctl file among O(files) that turns forwarding on; applied when forwarding is off.
    type: path
"""

EXAMPLES = r"""
- name: Install the restore script and the libvirt hook
  kvmnet.nat.persistence:
    files:
      - {path: /usr/local/sbin/kvmnet-nat-restore, content: "{{ lookup('template', 'kvmnet-nat-restore.sh.j2') }}",
         mode: "0755"}
      - {path: /etc/libvirt/hooks/network.d/50-kvmnet-nat, content: "{{ lookup('template', 'hook.sh.j2') }}",
         mode: "0755"}
    libvirt_hook: /etc/libvirt/hooks/network.d/50-kvmnet-nat
"""

RETURN = r"""
written:
  description: Files written (or that would be, in check mode).
  returned: always
  type: list
  elements: str
  sample: [/usr/local/sbin/kvmnet-nat-restore]
removed:
  description: Files removed (or that would be), then the directories O(prune) removed.
  returned: always
  type: list
  elements: str
  sample: []
reloaded:
  description: Units reloaded because the libvirt hook is new.
  returned: always
  type: list
  elements: str
  sample: [libvirtd.service]
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.kvmnet.nat.plugins.module_utils import _files
from ansible_collections.kvmnet.nat.plugins.module_utils._command import CommandError, run


def _mode(text, path):
    try:
        mode = int(text, 8)
    except (TypeError, ValueError):
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise ValueError('mode %r of %s is not an octal file mode' % (text, path))
    return mode


def _current(path):
    """(content, mode) of a regular file, or (None, None)."""
    if not os.path.isfile(path) or os.path.islink(path):
        return None, None
    with open(path, 'rb') as handle:
        content = handle.read().decode('utf-8', 'replace')
    return content, os.stat(path).st_mode & 0o7777


def _systemctl(module, *args):
    systemctl = module.get_bin_path('systemctl', required=True)
    return run(module, [systemctl] + list(args), context='systemctl %s' % ' '.join(args))


def _active(module, unit):
    systemctl = module.get_bin_path('systemctl')
    if not systemctl:
        return False
    return run(module, [systemctl, 'is-active', unit], check=False)[1].strip() == 'active'


def _forwarding_off(content):
    """A sysctl file's content turns on a setting that is off now (only ``key = 1`` lines are read)."""
    for line in content.splitlines():
        key, sep, value = line.partition('=')
        if not sep or line.lstrip().startswith('#') or value.strip() != '1':
            continue
        try:
            with open('/proc/sys/' + key.strip().replace('.', '/')) as live:
                if live.read().strip() != '1':
                    return True
        except OSError:
            return True
    return False


def _is_unit(path):
    return path.endswith(('.service', '.timer', '.socket')) and '/systemd/' in path


class _Run:
    """What one run does, in order, so check mode reports exactly what a real run would do."""

    def __init__(self, module):
        self.module = module
        self.check = module.check_mode
        self.written, self.removed, self.reloaded, self.diffs, self.changed = [], [], [], [], False

    def plan_files(self, files, present):
        for item in files:
            path = item['path']
            if not os.path.isabs(path):
                self.module.fail_json(msg='path %r is not absolute; nothing was changed' % (path,))
            if not present:
                if os.path.lexists(path):
                    self.removed.append(path)
                continue
            try:
                mode = _mode(item['mode'], path)
            except ValueError as exc:
                self.module.fail_json(msg='%s; nothing was changed' % exc)
            content, current = _current(path)
            if (content, current) != (item['content'], mode):
                self.written.append(path)
                self.diffs.append({'before_header': path, 'after_header': path, 'before': content or '',
                                   'after': item['content']})

    def plan_prune(self, directories):
        """The directories of ``directories`` that are empty once the planned removals are done."""
        gone, pruned = set(self.removed), []
        for path in directories:
            if not os.path.isabs(path):
                self.module.fail_json(msg='prune path %r is not absolute; nothing was changed' % (path,))
            path = os.path.normpath(path)
            if os.path.islink(path) or not os.path.isdir(path):
                continue
            try:
                entries = {os.path.join(path, name) for name in os.listdir(path)}
            except OSError:
                continue
            if entries <= gone:
                pruned.append(path)
                gone.add(path)
        return pruned

    def disable(self, unit):
        systemctl = self.module.get_bin_path('systemctl')
        if systemctl and run(self.module, [systemctl, 'is-enabled', unit], check=False)[1].strip() == 'enabled':
            self.changed = True
            if not self.check:
                _systemctl(self.module, 'disable', unit)

    def enable(self, unit, file_changed):
        systemctl = self.module.get_bin_path('systemctl')
        if not systemctl:
            return
        enabled = run(self.module, [systemctl, 'is-enabled', unit], check=False)[1].strip() == 'enabled'
        if enabled and not file_changed:
            return
        self.changed = True
        if not self.check:
            if file_changed:
                _systemctl(self.module, 'daemon-reload')
            # a changed file may carry a changed [Install] section (WantedBy): reenable makes its links anew
            _systemctl(self.module, 'reenable' if enabled else 'enable', unit)


def run_module(module):
    params = module.params
    present = params['state'] == 'present'
    step = _Run(module)
    hook_existed = bool(params['libvirt_hook']) and os.path.lexists(params['libvirt_hook'])
    step.plan_files(params['files'], present)
    missing = [path for path in params['directories'] if present and not os.path.isdir(path)]
    step.removed.extend(path for path in params['remove'] if os.path.lexists(path) and path not in step.removed)
    pruned = [] if present else step.plan_prune(params['prune'])
    # units that go away are disabled while their file is still there
    for path in step.removed:
        if _is_unit(path):
            step.disable(os.path.basename(path))
    if not step.check:
        for path in missing:
            os.makedirs(path, 0o755)
        for item in params['files']:
            if item['path'] in step.written:
                _files.write_atomic(module, item['path'], item['content'], _mode(item['mode'], item['path']),
                                    make_dirs=True)
        for path in step.removed:
            os.remove(path)
        for path in pruned:
            os.rmdir(path)
        if any(_is_unit(path) for path in step.removed):
            _systemctl(module, 'daemon-reload')
    step.removed.extend(pruned)
    step.changed = step.changed or bool(step.written or step.removed or missing)
    unit = params['unit']
    if unit and present:
        step.enable(unit, any(path.endswith('/' + unit) for path in step.written))
    if present and params['libvirt_hook'] and not hook_existed:
        step.reloaded = [name for name in params['libvirt_units'] if _active(module, name)]
        if not step.check:
            for name in step.reloaded:
                _systemctl(module, 'reload', name)
        step.changed = step.changed or bool(step.reloaded)
    sysctl = next((item for item in params['files'] if item['path'] == params['sysctl_file']), None)
    if present and sysctl is not None and _forwarding_off(sysctl['content']):
        step.changed = True
        if not step.check:
            run(module, [module.get_bin_path('sysctl', required=True), '-q', '-p', sysctl['path']],
                context='applying ' + sysctl['path'])
    result = dict(changed=step.changed, written=step.written, removed=step.removed, reloaded=step.reloaded)
    if module._diff:
        result['diff'] = step.diffs
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            state=dict(type='str', choices=['present', 'absent'], default='present'),
            files=dict(type='list', elements='dict', default=[], options=dict(
                path=dict(type='path', required=True),
                content=dict(type='str', default=''),
                mode=dict(type='str', default='0644'),
            )),
            remove=dict(type='list', elements='path', default=[]),
            directories=dict(type='list', elements='path', default=[]),
            prune=dict(type='list', elements='path', default=[]),
            unit=dict(type='str'),
            libvirt_hook=dict(type='path'),
            libvirt_units=dict(type='list', elements='str', default=['libvirtd.service', 'virtnetworkd.service']),
            sysctl_file=dict(type='path'),
        ),
        supports_check_mode=True,
    )
    try:
        run_module(module)
    except CommandError as exc:
        module.fail_json(msg=str(exc), cmd=exc.cmd, rc=exc.rc, stderr=exc.stderr)
    except OSError as exc:
        module.fail_json(msg='writing the persistence files: %s' % exc)


if __name__ == '__main__':
    main()
