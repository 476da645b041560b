# -*- coding: utf-8 -*-
# Copyright (c) kvmnet.nat contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""The nftables backend of kvmnet.nat: PRIVATE to this collection, no stable API.

One ``table inet kvmnet_nat`` of ours holds both families; the one rule we put into libvirt's own
``forward`` chain(s) lets the connections we DNAT through. Every line of nft text is written or read
in this package, and nowhere else:

- rules.py      forwards -> our table (maps, sets, chains) and the accept rule (Desired); the script
- ruleset.py    ``nft -j list ruleset`` JSON -> our table in the same canonical form, libvirt's chains
- plan.py       live + Desired -> Plan (one ``nft -f`` transaction)
- persisted.py  the saved file for boot (header, checksum) and the desired state it describes
- nft.py        ``nft -j list ruleset``, ``nft -c -f``, ``nft -f`` (the only module that runs commands)
- backend.py    the Engine and Backend of _backend.py, for the converge driver (_converge.py)
"""
