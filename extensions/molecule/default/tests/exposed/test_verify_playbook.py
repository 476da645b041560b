"""The kvmnet.nat.verify playbook, run from the lab's client, sees every declared port
(extensions/molecule/shared/reachability.py)."""
# pylint: disable-next=unused-import  # collected by pytest from this module
from reachability import test_verify_playbook_reports_every_declared_port  # noqa: F401
