# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
"""Stand-in for the get-pip.py that ansible-test downloads from its own file host.

That host is not reachable from our CI, only PyPI is. ansible-test runs this file (from
~/.ansible/test/cache/get_pip_<version>.py, where the Makefile puts it) inside a fresh venv
without pip, with pip-install arguments such as ``--disable-pip-version-check pip==24.2
--no-setuptools --no-wheel``. Like get-pip.py, it bootstraps pip (here with the interpreter's
own ensurepip) and then installs the requested packages from PyPI. A Python without ensurepip
(Debian's, without python3-venv: the root tests/tools/core_line.py makes) gets pip from a pip
wheel put next to this file instead.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys


def main():
    args = [arg for arg in sys.argv[1:] if arg not in ('--no-setuptools', '--no-wheel')]
    environ = dict(os.environ)  # ensurepip sets PIP_CONFIG_FILE=/dev/null in os.environ: keep pip's config
    try:
        import ensurepip  # pylint: disable=import-outside-toplevel
    except ImportError:
        wheels = sorted(glob.glob(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pip-*.whl')))
        if not wheels:
            sys.exit('no ensurepip in this Python and no pip wheel next to %s' % __file__)
        sys.exit(subprocess.call([sys.executable, os.path.join(wheels[-1], 'pip'), 'install'] + args, env=environ))
    ensurepip.bootstrap()
    sys.exit(subprocess.call([sys.executable, '-m', 'pip', 'install'] + args, env=environ))


if __name__ == '__main__':
    main()
