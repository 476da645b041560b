/* kvmlab-answerd: the lab guest's only service.
 * Usage: kvmlab-answerd NAME tcp:PORT[-PORT] ... udp:PORT ...
 * Every TCP connection and every UDP datagram gets one line back:
 * "<NAME> <client address as this guest sees it>\n". One process, poll(2), no threads. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SOCKS 128

static int listen_on(int type, int port)
{
    int one = 1, fd = socket(AF_INET, type, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || (type == SOCK_STREAM && listen(fd, 64) < 0)) {
        perror("bind/listen");
        close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    struct pollfd p[MAX_SOCKS];
    int udp[MAX_SOCKS], n = 0;
    char line[256], buf[2048];
    if (argc < 3) { fprintf(stderr, "usage: %s NAME tcp:PORT[-PORT]|udp:PORT ...\n", argv[0]); return 2; }
    for (int i = 2; i < argc; i++) {
        int first = 0, last = 0, is_udp = strncmp(argv[i], "udp:", 4) == 0;
        if (sscanf(argv[i] + 4, "%d-%d", &first, &last) < 2) last = first;
        for (int port = first; port <= last && n < MAX_SOCKS; port++) {
            int fd = listen_on(is_udp ? SOCK_DGRAM : SOCK_STREAM, port);
            if (fd < 0) continue;
            p[n].fd = fd; p[n].events = POLLIN; udp[n++] = is_udp;
        }
    }
    for (;;) {
        if (poll(p, n, -1) < 0) continue;
        for (int i = 0; i < n; i++) {
            struct sockaddr_in peer;
            socklen_t len = sizeof peer;
            if (!(p[i].revents & POLLIN)) continue;
            if (udp[i]) {
                if (recvfrom(p[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) < 0) continue;
            } else {
                int c = accept(p[i].fd, (struct sockaddr *)&peer, &len);
                if (c < 0) continue;
                int m = snprintf(line, sizeof line, "%s %s\n", argv[1], inet_ntoa(peer.sin_addr));
                (void)!write(c, line, m);
                close(c);
                continue;
            }
            int m = snprintf(line, sizeof line, "%s %s\n", argv[1], inet_ntoa(peer.sin_addr));
            sendto(p[i].fd, line, m, 0, (struct sockaddr *)&peer, len);
        }
    }
}
