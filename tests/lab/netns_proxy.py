"""ssh ProxyCommand into the lab: netns_proxy.py NETNS HOST PORT.

Joins the lab's network namespace (this process only) and relays stdin/stdout to HOST:PORT,
so the controller reaches the hypervisors without any address or route in the machine's own
network namespace.
"""
import ctypes
import os
import selectors
import socket
import sys

CLONE_NEWNET = 0x40000000


def main(netns, host, port):
    fd = os.open(f'/run/netns/{netns}', os.O_RDONLY)
    if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
        sys.exit(f'netns_proxy: setns {netns}: {os.strerror(ctypes.get_errno())}')
    os.close(fd)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.settimeout(None)
    sel = selectors.DefaultSelector()
    sel.register(0, selectors.EVENT_READ, 'in')
    sel.register(sock, selectors.EVENT_READ, 'sock')
    while True:
        for key, _events in sel.select():
            if key.data == 'in':
                data = os.read(0, 65536)
                if not data:
                    sock.shutdown(socket.SHUT_WR)
                    sel.unregister(0)
                    continue
                sock.sendall(data)
            else:
                data = sock.recv(65536)
                if not data:
                    return
                while data:
                    data = data[os.write(1, data):]


if __name__ == '__main__':
    main(*sys.argv[1:4])
