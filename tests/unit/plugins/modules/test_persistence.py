# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet.nat.persistence on temporary paths, with canned systemctl answers."""

from __future__ import annotations

import os
import stat

import pytest

from ansible_collections.kvmnet.nat.plugins.modules import persistence as M
from ansible_collections.kvmnet.nat.tests.unit.plugins import fakes


DEFAULTS = {'state': 'present', 'files': [], 'remove': [], 'directories': [], 'prune': [], 'unit': None,
            'libvirt_hook': None,
            'libvirt_units': ['libvirtd.service'], 'sysctl_file': None}


def FakeModule(params, enabled=(), active=(), check_mode=False):  # noqa: N802  (reads like the class it builds)
    """systemctl is-enabled / is-active answer from the sets given; every other command succeeds."""
    def answer(command):
        words = command.split()
        if words[:2] == ['systemctl', 'is-enabled']:
            return (0, 'enabled\n', '') if words[2] in enabled else (1, 'disabled\n', '')
        if words[:2] == ['systemctl', 'is-active']:
            return (0, 'active\n', '') if words[2] in active else (3, 'inactive\n', '')
        return 0, '', ''
    return fakes.FakeModule(dict(DEFAULTS, **params), answer, check_mode, diff=True)


def run(module):
    return fakes.result_of(M.run_module, module)


def commands(module):
    """What the module ran, without its systemctl queries."""
    return [c for c in module.commands() if not c.startswith('systemctl is-')]


def pieces(tmp, **contents):
    return [{'path': str(tmp / name), 'content': text, 'mode': '0755' if name.endswith('.sh') else '0644'}
            for name, text in contents.items()]


def test_writes_what_differs_with_its_mode_and_nothing_else(tmp_path):
    (tmp_path / 'same.sh').write_text('x\n')
    os.chmod(str(tmp_path / 'same.sh'), 0o755)
    module = FakeModule({'files': pieces(tmp_path, **{'same.sh': 'x\n', 'new.sh': 'y\n', 'sub/deep.conf': 'z\n'})})
    result = run(module)
    assert result['changed'] is True
    assert result['written'] == [str(tmp_path / 'new.sh'), str(tmp_path / 'sub/deep.conf')]
    assert stat.S_IMODE(os.stat(str(tmp_path / 'new.sh')).st_mode) == 0o755
    assert (tmp_path / 'sub/deep.conf').read_text() == 'z\n'
    assert [d['after_header'] for d in result['diff']] == result['written']
    again = run(FakeModule({'files': pieces(tmp_path, **{'same.sh': 'x\n', 'new.sh': 'y\n', 'sub/deep.conf': 'z\n'})}))
    assert again['changed'] is False and module.calls == []


def test_check_mode_reports_and_writes_nothing(tmp_path):
    module = FakeModule({'files': pieces(tmp_path, **{'new.sh': 'y\n'}), 'directories': [str(tmp_path / 'd')]},
                        check_mode=True)
    result = run(module)
    assert result['changed'] is True and result['written'] == [str(tmp_path / 'new.sh')]
    assert os.listdir(str(tmp_path)) == []


def test_a_new_hook_reloads_the_active_libvirt_daemon_a_changed_one_does_not(tmp_path):
    hook = str(tmp_path / 'hook.sh')
    params = {'files': pieces(tmp_path, **{'hook.sh': 'v1\n'}), 'libvirt_hook': hook,
              'libvirt_units': ['libvirtd.service', 'virtnetworkd.service']}
    module = FakeModule(params, active={'libvirtd.service'})
    assert run(module)['reloaded'] == ['libvirtd.service']
    assert 'systemctl reload libvirtd.service' in commands(module)
    module = FakeModule(dict(params, files=pieces(tmp_path, **{'hook.sh': 'v2\n'})), active={'libvirtd.service'})
    result = run(module)
    assert result['reloaded'] == [] and result['written'] == [hook]
    assert not [c for c in commands(module) if 'reload' in c]


def test_the_unit_is_enabled_with_a_daemon_reload_when_its_file_changed(tmp_path):
    unit_dir = tmp_path / 'systemd'
    unit_dir.mkdir()
    params = {'files': [{'path': str(unit_dir / 'kvmnet-nat.service'), 'content': '[Unit]\n', 'mode': '0644'}],
              'unit': 'kvmnet-nat.service'}
    module = FakeModule(params)
    run(module)
    assert commands(module) == [
        'systemctl daemon-reload', 'systemctl enable kvmnet-nat.service']
    module = FakeModule(params, enabled={'kvmnet-nat.service'})
    assert run(module)['changed'] is False
    # an enabled unit whose file changed (its [Install] may name another WantedBy): its links made anew
    params['files'][0]['content'] = '[Unit]\n[Install]\nWantedBy=multi-user.target nftables.service\n'
    module = FakeModule(params, enabled={'kvmnet-nat.service'})
    run(module)
    assert commands(module) == ['systemctl daemon-reload', 'systemctl reenable kvmnet-nat.service']


def test_the_other_mechanisms_unit_is_disabled_before_it_is_removed(tmp_path):
    unit = tmp_path / 'systemd' / 'kvmnet-nat.service'
    unit.parent.mkdir()
    unit.write_text('[Unit]\n')
    module = FakeModule({'remove': [str(unit)]}, enabled={'kvmnet-nat.service'})
    result = run(module)
    assert result['removed'] == [str(unit)] and not unit.exists()
    assert commands(module) == [
        'systemctl disable kvmnet-nat.service', 'systemctl daemon-reload']


def test_absent_removes_every_listed_file(tmp_path):
    for name in ('a.sh', 'b.conf'):
        (tmp_path / name).write_text('x')
    result = run(FakeModule({'state': 'absent', 'files': pieces(tmp_path, **{'a.sh': '', 'b.conf': '', 'gone': ''})}))
    assert sorted(os.path.basename(p) for p in result['removed']) == ['a.sh', 'b.conf']
    assert os.listdir(str(tmp_path)) == []


def _library(tmp_path):
    """The restore library's layout: two levels of directories, a file in each."""
    lib = tmp_path / 'lib'
    (lib / 'pkg' / 'sub').mkdir(parents=True)
    files = [lib / 'pkg' / 'a.py', lib / 'pkg' / 'sub' / 'b.py']
    for path in files:
        path.write_text('x')
    return lib, [str(p) for p in files], [str(lib / 'pkg' / 'sub'), str(lib / 'pkg'), str(lib)]


@pytest.mark.parametrize('check_mode', [False, True])
def test_absent_prunes_the_directories_it_leaves_empty(tmp_path, check_mode):
    lib, files, dirs = _library(tmp_path)
    result = run(FakeModule({'state': 'absent', 'remove': files, 'prune': dirs}, check_mode=check_mode))
    assert result['changed'] is True and result['removed'] == files + dirs
    assert os.path.exists(str(lib)) is check_mode


@pytest.mark.parametrize('extra, kept', [
    ('pkg/sub/admins-note', ['pkg/sub', 'pkg', '']),      # something else in the deepest: nothing above it goes
    ('pkg/other', ['pkg', '']),                           # something else one level up
    ('sibling', ['']),                                    # something else at the top
])
def test_absent_keeps_a_directory_that_holds_anything_else(tmp_path, extra, kept):
    lib, files, dirs = _library(tmp_path)
    (lib / extra).write_text('mine')
    result = run(FakeModule({'state': 'absent', 'remove': files, 'prune': dirs}))
    assert [d for d in dirs if os.path.isdir(d)] == [str(lib / k).rstrip('/') for k in kept]
    assert result['removed'] == files + [d for d in dirs if not os.path.isdir(d)]
    assert (lib / extra).read_text() == 'mine'


def test_prune_does_nothing_with_present_and_follows_no_symlink(tmp_path):
    lib, files, dirs = _library(tmp_path)
    result = run(FakeModule({'prune': dirs}))
    assert result['changed'] is False and all(os.path.isdir(d) for d in dirs)
    empty = tmp_path / 'empty'
    empty.mkdir()
    (tmp_path / 'link').symlink_to(empty)
    result = run(FakeModule({'state': 'absent', 'prune': [str(tmp_path / 'link')]}))
    assert result['changed'] is False and empty.is_dir() and (tmp_path / 'link').is_symlink()


@pytest.mark.parametrize('content, off', [
    ('net.ipv4.ip_forward = 1\n', 'unknown'),
    ('# comment = 1\n', False),
    ('net.ipv4.no_such_key = 1\n', True),        # unreadable: apply
])
def test_forwarding_off_reads_only_the_settings_turned_on(content, off):
    if off == 'unknown':
        with open('/proc/sys/net/ipv4/ip_forward') as live:
            off = live.read().strip() != '1'
    assert M._forwarding_off(content) is off


@pytest.mark.parametrize('mode', ['0x755', '99999', 'rwx'])
def test_a_bad_mode_is_refused_before_anything_is_written(tmp_path, mode):
    result = run(FakeModule({'files': [{'path': str(tmp_path / 'f'), 'content': 'x', 'mode': mode}]}))
    assert result['failed'] is True and 'is not an octal file mode' in result['msg']
    assert os.listdir(str(tmp_path)) == []
