"""Wait (up to 240 s) until each named guest answers on tcp/22 with its own name; print NAME IP."""
import re
import socket
import subprocess
import sys
import time

deadline = time.monotonic() + 240
pending = set(sys.argv[1:])
while pending and time.monotonic() < deadline:
    for name in sorted(pending):
        out = subprocess.run(['virsh', '-q', '-c', 'qemu:///system', 'domifaddr', name, '--source', 'lease'], check=False,
                             capture_output=True, text=True).stdout
        for ip in re.findall(r'ipv4\s+([0-9.]+)/', out):
            try:
                with socket.create_connection((ip, 22), timeout=1) as s:
                    s.settimeout(2)
                    if s.recv(100).split()[0].decode() == name:
                        print(name, ip, flush=True)
                        pending.discard(name)
            except (OSError, IndexError):
                pass
    time.sleep(1)
if pending:
    sys.exit(f'guests not answering after 240 s: {" ".join(sorted(pending))}')
