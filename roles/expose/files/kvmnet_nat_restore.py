# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""kvmnet-nat-restore's Python entry point, installed by the role kvmnet.nat.expose next to the
collection's module_utils it imports (/usr/local/lib/kvmnet-nat). The shell wrapper
/usr/local/sbin/kvmnet-nat-restore (templates/kvmnet-nat-restore.sh.j2) runs it as

    python3 -IBS kvmnet_nat_restore.py LIBRARY SAVED_BASE LOCK_PATH SYSLOG(0|1) [start|flush]

(isolated: no PYTHON* variables, no user site, no site-packages, no bytecode files written). This file is
the part that runs commands without Ansible: it hands module_utils/_restore.py a Host (``get_bin_path``,
``run_command``, as the backend asks of an AnsibleModule) and a logger. Whatever goes wrong, including a
library file missing or unreadable, ends in one line on stderr (and the journal) and exit status 1, never
a traceback; a usage error is 2.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

NAME = 'kvmnet-nat-restore'
DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
LOG_TIMEOUT = 3             # a journal stuck on a bad disk must not hold the restore


class Host:
    """Commands found on the caller's PATH (the default one when it has none), run from an argument
    list, never through a shell."""

    def __init__(self, path=None):
        self.path = path or DEFAULT_PATH

    def get_bin_path(self, name):
        return shutil.which(name, path=self.path)

    def run_command(self, argv, data=None, binary_data=False, environ_update=None):
        stdin = {'stdin': subprocess.DEVNULL} if data is None else {'input': data.encode('utf-8')}
        try:
            proc = subprocess.run(argv, capture_output=True, env=dict(os.environ, **(environ_update or {})),
                                  check=False, **stdin)
        except OSError as exc:
            return 127, '', '%s: %s' % (argv[0], exc.strerror or exc)
        return proc.returncode, proc.stdout.decode('utf-8', 'replace'), proc.stderr.decode('utf-8', 'replace')


class Log:
    """``log(level, text)``: to stderr (except ``debug``), and with ``syslog`` to the journal through
    ``logger`` (up to date: debug; a change: notice; a refusal or failure: err), bounded in time."""

    def __init__(self, host, syslog, stream=None):
        self.logger = host.get_bin_path('logger') if syslog else None
        self.stream = stream or sys.stderr

    def __call__(self, level, text):
        if level != 'debug':
            self.stream.write('%s: %s\n' % (NAME, text))
            self.stream.flush()
        if self.logger:
            try:
                subprocess.run([self.logger, '-p', 'daemon.' + level, '-t', NAME, '--', text], check=False,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               timeout=LOG_TIMEOUT)
            except (OSError, subprocess.TimeoutExpired):
                pass


def main(argv, environ=None, stream=None):
    """The program; ``argv`` without the program name. Returns the exit status."""
    environ = os.environ if environ is None else environ
    stream = stream or sys.stderr
    if len(argv) < 4 or argv[3] not in ('0', '1'):
        stream.write('usage: %s LIBRARY SAVED_BASE LOCK_PATH 0|1 [start|flush]\n' % NAME)
        return 2
    library, base, lock_path, syslog = argv[0], argv[1], argv[2], argv[3] == '1'
    host = Host(environ.get('PATH'))
    log = Log(host, syslog, stream)
    sys.path.insert(0, library)
    try:
        from ansible_collections.kvmnet.nat.plugins.module_utils import _restore
    except Exception as exc:        # pylint: disable=broad-exception-caught  # a library file missing or broken
        log('err', 'the library in %s cannot be loaded (%s: %s); nothing was changed. Run the kvmnet.nat.expose '
            'playbook again to reinstall it' % (library, type(exc).__name__, exc))
        return 1
    try:
        return _restore.main(argv[4:], base, lock_path, host, log, environ, stream)
    except Exception as exc:        # pylint: disable=broad-exception-caught  # one line, never a traceback
        log('err', 'failed: %s: %s' % (type(exc).__name__, exc))
        return 1


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
