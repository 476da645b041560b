# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""roles/expose/files/kvmnet_nat_restore.py, the restore's entry point on the hypervisor: it runs the
commands for module_utils/_restore.py, and whatever fails ends in one line and exit status 1. Also: the
files the role installs with it (vars __expose_restore_sources) are everything it imports."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys

import pytest
import yaml

ROLE = os.path.join(os.path.dirname(__file__), '..', '..', '..', 'roles', 'expose')
ENTRY = os.path.join(ROLE, 'files', 'kvmnet_nat_restore.py')
COLLECTIONS = os.path.abspath(os.path.join(os.path.dirname(__file__), *['..'] * 6))


def _entry():
    spec = importlib.util.spec_from_file_location('kvmnet_nat_restore', ENTRY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


E = _entry()


def test_host_runs_argument_lists_and_finds_commands_on_its_path(tmp_path):
    host = E.Host(str(tmp_path))
    (tmp_path / 'tool').write_text('#!/bin/sh\ncat; echo "$LANG err" >&2; exit 3\n')
    (tmp_path / 'tool').chmod(0o755)
    assert host.get_bin_path('tool') == str(tmp_path / 'tool') and host.get_bin_path('sh') is None
    assert host.run_command([str(tmp_path / 'tool')], data='in; $(x)', environ_update={'LANG': 'C'}) == \
        (3, 'in; $(x)', 'C err\n')
    assert host.run_command([str(tmp_path / 'missing')])[0] == 127
    assert E.Host(None).path == E.DEFAULT_PATH


def test_log_writes_stderr_and_the_journal_with_its_level(tmp_path):
    (tmp_path / 'logger').write_text('#!/bin/sh\nprintf "%%s\\n" "$*" >>%s\n' % (tmp_path / 'journal'))
    (tmp_path / 'logger').chmod(0o755)
    stream = io.StringIO()
    log = E.Log(E.Host(str(tmp_path)), True, stream)
    log('debug', 'IPv4: up to date')
    log('err', 'IPv6: refused')
    assert stream.getvalue() == 'kvmnet-nat-restore: IPv6: refused\n'
    assert (tmp_path / 'journal').read_text().splitlines() == [
        '-p daemon.debug -t kvmnet-nat-restore -- IPv4: up to date', '-p daemon.err -t kvmnet-nat-restore -- IPv6: refused']
    assert E.Log(E.Host(str(tmp_path)), False, stream).logger is None


@pytest.mark.parametrize('argv', [[], ['lib', 'base', 'lock'], ['lib', 'base', 'lock', 'yes']])
def test_usage(argv):
    stream = io.StringIO()
    assert E.main(argv, {}, stream) == 2 and stream.getvalue().startswith('usage: kvmnet-nat-restore ')


def _run(library, tmp_path, *args):
    return subprocess.run([sys.executable, '-IBS', ENTRY, library, str(tmp_path / 'rules'), str(tmp_path / 'lock'),
                           '0'] + list(args), capture_output=True, text=True, check=False, timeout=60,
                          env={'PATH': str(tmp_path)})


def test_isolated_it_runs_on_the_collection_and_refuses_a_broken_library(tmp_path):
    proc = _run(COLLECTIONS, tmp_path, 'start')           # no saved file: nothing to do
    assert (proc.returncode, proc.stderr) == (0, '')
    proc = _run(COLLECTIONS, tmp_path, 'restart')
    assert proc.returncode == 2
    proc = _run(str(tmp_path / 'nothing'), tmp_path)
    assert proc.returncode == 1 and proc.stderr.count('\n') == 1 and 'cannot be loaded (ModuleNotFoundError' in proc.stderr


def test_the_installed_sources_are_everything_the_restore_imports(tmp_path):
    """Only the files the role installs (vars/main.yml, __expose_restore_sources), imported isolated."""
    with open(os.path.join(ROLE, 'vars', 'main.yml')) as handle:
        sources = yaml.safe_load(handle)['__expose_restore_sources']
    utils = os.path.join(COLLECTIONS, 'ansible_collections', 'kvmnet', 'nat', 'plugins', 'module_utils')
    target = tmp_path / 'lib' / 'ansible_collections' / 'kvmnet' / 'nat' / 'plugins' / 'module_utils'
    for name in sources:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        with open(os.path.join(utils, name)) as src:
            (target / name).write_text(src.read())
    proc = _run(str(tmp_path / 'lib'), tmp_path, 'flush')     # imports everything, finds no iptables: 0
    assert (proc.returncode, proc.stderr) == (0, '')
    (target / 'iptables' / 'walk.py').unlink()
    proc = _run(str(tmp_path / 'lib'), tmp_path, 'flush')
    assert proc.returncode == 1 and 'cannot be loaded' in proc.stderr
