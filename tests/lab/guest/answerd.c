/* kvmlab-answerd: the lab guest's only service.
 * Usage: kvmlab-answerd NAME tcp:PORT[-PORT] ... udp:PORT ...
 * Every TCP connection and every UDP datagram gets one line back:
 * "<NAME> <client address as this guest sees it>\n". One process, poll(2), no threads.
 * Each port is bound twice: IPv4, and IPv6 where the guest has it (IPV6_V6ONLY, so an IPv4 client is
 * still printed as a.b.c.d). */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_SOCKS 128

static int listen_on(int family, int type, int port)
{
    int one = 1, fd = socket(family, type, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct sockaddr_in6 a6 = {.sin6_family = AF_INET6, .sin6_port = htons(port), .sin6_addr = IN6ADDR_ANY_INIT};
    struct sockaddr *addr = family == AF_INET6 ? (struct sockaddr *)&a6 : (struct sockaddr *)&a;
    socklen_t len = family == AF_INET6 ? sizeof a6 : sizeof a;
    if (fd < 0) return -1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(fd, addr, len) < 0 || (type == SOCK_STREAM && listen(fd, 64) < 0)) {
        if (family == AF_INET) perror("bind/listen");
        close(fd);
        return -1;
    }
    return fd;
}

/* "NAME ADDRESS\n" for the peer, IPv4 or IPv6 */
static int answer(char *line, size_t size, const char *name, const struct sockaddr_storage *peer)
{
    char text[INET6_ADDRSTRLEN] = "?";
    if (peer->ss_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, text, sizeof text);
    else
        inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, text, sizeof text);
    return snprintf(line, size, "%s %s\n", name, text);
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
        for (int port = first; port <= last; port++) {
            for (int f = 0; f < 2 && n < MAX_SOCKS; f++) {
                int fd = listen_on(f ? AF_INET6 : AF_INET, is_udp ? SOCK_DGRAM : SOCK_STREAM, port);
                if (fd < 0) continue;
                p[n].fd = fd; p[n].events = POLLIN; udp[n++] = is_udp;
            }
        }
    }
    for (;;) {
        if (poll(p, n, -1) < 0) continue;
        for (int i = 0; i < n; i++) {
            struct sockaddr_storage peer;
            socklen_t len = sizeof peer;
            if (!(p[i].revents & POLLIN)) continue;
            if (udp[i]) {
                if (recvfrom(p[i].fd, buf, sizeof buf, 0, (struct sockaddr *)&peer, &len) < 0) continue;
            } else {
                int c = accept(p[i].fd, (struct sockaddr *)&peer, &len);
                if (c < 0) continue;
                int m = answer(line, sizeof line, argv[1], &peer);
                (void)!write(c, line, m);
                close(c);
                continue;
            }
            int m = answer(line, sizeof line, argv[1], &peer);
            sendto(p[i].fd, line, m, 0, (struct sockaddr *)&peer, len);
        }
    }
}
