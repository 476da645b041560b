"""Answer every TCP connection on :80 with 'host <hostname> <client address>'."""
import socket
import socketserver


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        self.wfile.write(f'host {socket.gethostname()} {self.client_address[0]}\n'.encode())


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


Server(('0.0.0.0', 80), Handler).serve_forever()
