/* connrate: new TCP connections per second, bounded in time and count (bench/dataplane.py).
 *
 *   connrate server PORT
 *       accept, write "ok\n", close; until killed (the benchmark kills it by PID)
 *   connrate client IP PORT PARALLEL SECONDS MAX
 *       keep PARALLEL connections in flight: connect, read the answer to EOF, close with RST
 *       (no TIME_WAIT on either side); stop after SECONDS or MAX completed connections;
 *       print "<completed> <failed> <in flight at the end> <seconds>"
 *
 * A connection is counted only when the server's answer arrived: the first packet went through
 * the hypervisor's DNAT and FORWARD chains and the reply came back through conntrack.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PARALLEL 1024

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int serve(int port)
{
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons(port)};
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
        bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 || listen(fd, 4096) < 0) {
        perror("connrate server");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    for (;;) {
        int conn = accept(fd, NULL, NULL);
        if (conn < 0)
            continue;
        if (write(conn, "ok\n", 3) < 0) {
            /* the client gave up: nothing to answer */
        }
        close(conn);
    }
}

static int open_one(int ep, const struct sockaddr_in *dst)
{
    struct linger rst = {.l_onoff = 1, .l_linger = 0};
    struct epoll_event ev = {.events = EPOLLOUT};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &rst, sizeof(rst));
    if (connect(fd, (const struct sockaddr *)dst, sizeof(*dst)) < 0 && errno != EINPROGRESS) {
        close(fd);
        return -1;
    }
    ev.data.fd = fd;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int client(const char *ip, int port, int parallel, double seconds, long max)
{
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons(port)};
    struct epoll_event events[MAX_PARALLEL];
    long completed = 0, failed = 0, in_flight = 0;
    double start, deadline;
    int ep = epoll_create1(0);

    if (inet_pton(AF_INET, ip, &dst.sin_addr) != 1 || ep < 0 || parallel < 1 || parallel > MAX_PARALLEL) {
        fprintf(stderr, "connrate client: bad arguments\n");
        return 2;
    }
    start = now();
    deadline = start + seconds;
    for (int i = 0; i < parallel; i++) {
        if (open_one(ep, &dst) < 0)
            failed++;
        else
            in_flight++;
    }
    while (in_flight > 0 && completed < max) {
        double left = deadline - now();
        int n;
        if (left <= 0)
            break;
        n = epoll_wait(ep, events, MAX_PARALLEL, (int)(left * 1000) + 1);
        for (int i = 0; i < n; i++) {
            int fd = events[i].data.fd;
            char buf[64];
            ssize_t got;
            if (events[i].events & EPOLLOUT) {
                int err = 0;
                socklen_t len = sizeof(err);
                struct epoll_event ev = {.events = EPOLLIN, .data.fd = fd};
                getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
                if (err == 0 && epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev) == 0)
                    continue; /* connected: now wait for the answer */
                failed++;
            } else {
                while ((got = read(fd, buf, sizeof(buf))) > 0)
                    ;
                if (got < 0 && errno == EAGAIN)
                    continue; /* more to come */
                if (got == 0)
                    completed++;
                else
                    failed++;
            }
            close(fd); /* SO_LINGER 0: RST, the conntrack entry closes at once */
            in_flight--;
            if (now() < deadline && completed + in_flight < max) {
                if (open_one(ep, &dst) < 0)
                    failed++;
                else
                    in_flight++;
            }
        }
    }
    printf("%ld %ld %ld %.3f\n", completed, failed, in_flight, now() - start);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "server") == 0)
        return serve(atoi(argv[2]));
    if (argc == 7 && strcmp(argv[1], "client") == 0)
        return client(argv[2], atoi(argv[3]), atoi(argv[4]), atof(argv[5]), atol(argv[6]));
    fprintf(stderr, "usage: connrate server PORT | connrate client IP PORT PARALLEL SECONDS MAX\n");
    return 2;
}
