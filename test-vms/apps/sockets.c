/* TCP over 127.0.0.1 and AF_UNIX streams, all inside one process (the
 * libOS has no fork): non-blocking sockets driven by poll and epoll. Run
 * natively and in the image; prints only facts that do not depend on the
 * kernel's timing or its ephemeral ports. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CLIENTS 4
#define PAYLOAD 100000

static int failures;

static void check(int ok, const char *what) {
    printf("%s: %s\n", what, ok ? "ok" : "FAILED");
    if (!ok) {
        failures++;
        printf("  (errno %d %s)\n", errno, strerror(errno));
    }
}

static struct sockaddr_in loopback(int port) {
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

static int port_of(int fd, int peer) {
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int r = peer ? getpeername(fd, (struct sockaddr *)&a, &len) : getsockname(fd, (struct sockaddr *)&a, &len);
    return r == 0 && len == sizeof a && a.sin_family == AF_INET ? ntohs(a.sin_port) : -1;
}

static int listener(int backlog) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = loopback(0);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || listen(fd, backlog) != 0)
        return -1;
    return fd;
}

static int connect_nb(int port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback(port);
    int r = connect(fd, (struct sockaddr *)&a, sizeof a);
    if (r != 0 && errno != EINPROGRESS)
        return -1;
    return fd;
}

static char payload[CLIENTS][PAYLOAD];

struct peer {
    int fd;
    /* Server side: bytes read but not yet echoed. */
    char buf[4096];
    int have, off;
    /* Client side: bytes sent and checked. */
    int sent, got, bad, id;
    int closed;
};

/* One step of an echo server connection: echo what is pending, read more. */
static void serve(struct peer *p) {
    for (;;) {
        if (p->off < p->have) {
            ssize_t n = send(p->fd, p->buf + p->off, p->have - p->off, MSG_NOSIGNAL);
            if (n < 0)
                return;
            p->off += n;
            continue;
        }
        ssize_t n = recv(p->fd, p->buf, sizeof p->buf, 0);
        if (n <= 0) {
            if (n == 0) {
                close(p->fd);
                p->closed = 1;
            }
            return;
        }
        p->have = n;
        p->off = 0;
    }
}

/* One step of a client: send more of its payload, check what came back. */
static void client_step(struct peer *c) {
    while (c->sent < PAYLOAD) {
        int chunk = PAYLOAD - c->sent < 7000 ? PAYLOAD - c->sent : 7000;
        ssize_t n = write(c->fd, payload[c->id] + c->sent, chunk);
        if (n <= 0)
            break;
        c->sent += n;
    }
    char buf[8192];
    ssize_t n;
    while ((n = read(c->fd, buf, sizeof buf)) > 0) {
        if (memcmp(buf, payload[c->id] + c->got, n) != 0)
            c->bad = 1;
        c->got += n;
    }
}

static void fill_payloads(void) {
    for (int c = 0; c < CLIENTS; c++)
        for (int i = 0; i < PAYLOAD; i++)
            payload[c][i] = (char)(i * 7 + c * 31 + i / 251);
}

static void echo_with_poll(void) {
    int l = listener(16);
    check(l >= 0, "poll echo: listen on 127.0.0.1");
    int port = port_of(l, 0);
    struct peer clients[CLIENTS], servers[CLIENTS];
    memset(clients, 0, sizeof clients);
    memset(servers, 0, sizeof servers);
    for (int i = 0; i < CLIENTS; i++) {
        clients[i].fd = connect_nb(port);
        clients[i].id = i;
        servers[i].fd = -1;
    }
    int accepted = 0, done = 0, rounds = 0;
    while (done < CLIENTS && rounds++ < 100000) {
        struct pollfd fds[1 + 2 * CLIENTS];
        int n = 0;
        fds[n++] = (struct pollfd){l, POLLIN, 0};
        for (int i = 0; i < CLIENTS; i++) {
            fds[n++] = (struct pollfd){clients[i].fd, clients[i].sent < PAYLOAD ? POLLIN | POLLOUT : POLLIN, 0};
            fds[n++] = (struct pollfd){servers[i].closed ? -1 : servers[i].fd, POLLIN | POLLOUT, 0};
        }
        if (poll(fds, n, 5000) <= 0)
            break;
        if (fds[0].revents & POLLIN) {
            int s;
            while (accepted < CLIENTS && (s = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0)
                servers[accepted++].fd = s;
        }
        done = 0;
        for (int i = 0; i < CLIENTS; i++) {
            if (servers[i].fd >= 0 && !servers[i].closed)
                serve(&servers[i]);
            client_step(&clients[i]);
            if (clients[i].got == PAYLOAD && clients[i].sent == PAYLOAD)
                done++;
        }
    }
    int good = 0;
    for (int i = 0; i < CLIENTS; i++) {
        good += clients[i].got == PAYLOAD && !clients[i].bad;
        close(clients[i].fd);
        if (!servers[i].closed && servers[i].fd >= 0)
            close(servers[i].fd);
    }
    printf("poll echo: %d of %d clients got their %d bytes back intact\n", good, CLIENTS, PAYLOAD);
    check(accepted == CLIENTS && good == CLIENTS, "poll echo");
    close(l);
}

static void echo_with_epoll(void) {
    int l = listener(16);
    int port = port_of(l, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    check(ep >= 0, "epoll_create1");
    struct peer peers[2 * CLIENTS];
    memset(peers, 0, sizeof peers);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = 1000};
    epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev);
    for (int i = 0; i < CLIENTS; i++) {
        peers[i].fd = connect_nb(port);
        peers[i].id = i;
        ev = (struct epoll_event){.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.u32 = i};
        epoll_ctl(ep, EPOLL_CTL_ADD, peers[i].fd, &ev);
    }
    int accepted = 0, done = 0, rounds = 0;
    while (done < CLIENTS && rounds++ < 100000) {
        struct epoll_event evs[16];
        int n = epoll_wait(ep, evs, 16, 5000);
        if (n <= 0)
            break;
        for (int k = 0; k < n; k++) {
            unsigned id = evs[k].data.u32;
            if (id == 1000) {
                int s;
                while ((s = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    struct peer *p = &peers[CLIENTS + accepted];
                    p->fd = s;
                    ev = (struct epoll_event){.events = EPOLLIN | EPOLLOUT, .data.u32 = CLIENTS + accepted};
                    epoll_ctl(ep, EPOLL_CTL_ADD, s, &ev);
                    accepted++;
                }
            } else if (id >= CLIENTS) {
                if (!peers[id].closed)
                    serve(&peers[id]);
            } else {
                client_step(&peers[id]);
                if (peers[id].sent == PAYLOAD) {
                    /* Everything sent: only wait for the echo now. */
                    ev = (struct epoll_event){.events = EPOLLIN, .data.u32 = id};
                    epoll_ctl(ep, EPOLL_CTL_MOD, peers[id].fd, &ev);
                }
            }
        }
        done = 0;
        for (int i = 0; i < CLIENTS; i++)
            done += peers[i].got == PAYLOAD;
    }
    int good = 0;
    for (int i = 0; i < CLIENTS; i++)
        good += peers[i].got == PAYLOAD && !peers[i].bad;
    printf("epoll echo: %d of %d clients got their %d bytes back intact\n", good, CLIENTS, PAYLOAD);
    check(accepted == CLIENTS && good == CLIENTS, "epoll echo");
    for (int i = 0; i < 2 * CLIENTS; i++)
        if (peers[i].fd > 0 && !peers[i].closed)
            close(peers[i].fd);
    close(ep);
    close(l);
}

static int wait_for(int fd, short events, int ms) {
    struct pollfd p = {fd, events, 0};
    return poll(&p, 1, ms) == 1 ? p.revents : 0;
}

static int so_error(int fd) {
    int err = -1;
    socklen_t len = sizeof err;
    getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
    return err;
}

static int accept_one(int l) {
    wait_for(l, POLLIN, 5000);
    return accept4(l, NULL, NULL, SOCK_NONBLOCK);
}

static void nonblocking_connect_and_names(void) {
    int l = listener(4);
    int port = port_of(l, 0);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in a = loopback(port);
    errno = 0;
    int r = connect(c, (struct sockaddr *)&a, sizeof a);
    check(r == -1 && errno == EINPROGRESS, "non-blocking connect: EINPROGRESS");
    int ev = wait_for(c, POLLOUT, 5000);
    check((ev & (POLLOUT | POLLERR | POLLHUP)) == POLLOUT, "then writable");
    check(so_error(c) == 0, "SO_ERROR 0");
    check(connect(c, (struct sockaddr *)&a, sizeof a) == 0, "connect again: 0, it completed");
    errno = 0;
    check(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == EISCONN, "and once more: EISCONN");
    int s = accept_one(l);
    check(s >= 0, "accept");
    check(port_of(c, 1) == port, "client's peer is the listener's port");
    check(port_of(s, 0) == port, "accepted socket's name has the listener's port");
    check(port_of(s, 1) == port_of(c, 0), "accepted socket's peer is the client's name");
    struct sockaddr_in p;
    socklen_t len = sizeof p;
    getpeername(c, (struct sockaddr *)&p, &len);
    check(p.sin_addr.s_addr == htonl(INADDR_LOOPBACK), "peer address 127.0.0.1");
    int u = socket(AF_INET, SOCK_STREAM, 0);
    len = sizeof p;
    errno = 0;
    check(getpeername(u, (struct sockaddr *)&p, &len) == -1 && errno == ENOTCONN, "getpeername unconnected: ENOTCONN");
    len = sizeof p;
    check(getsockname(u, (struct sockaddr *)&p, &len) == 0 && p.sin_port == 0 && len == sizeof p,
          "getsockname unbound: port 0");
    close(u);
    close(s);
    close(c);
    close(l);
}

/* A port that was free a moment ago and on which nobody listens. */
static int unused_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(0);
    bind(fd, (struct sockaddr *)&a, sizeof a);
    int port = port_of(fd, 0);
    close(fd);
    return port;
}

static void refused(void) {
    int port = unused_port();
    int c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = loopback(port);
    errno = 0;
    check(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == ECONNREFUSED,
          "blocking connect to a closed port: ECONNREFUSED");
    close(c);
    c = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    errno = 0;
    check(connect(c, (struct sockaddr *)&a, sizeof a) == -1 && errno == EINPROGRESS,
          "non-blocking: EINPROGRESS first");
    int ev = wait_for(c, POLLOUT, 5000);
    check((ev & (POLLERR | POLLHUP)) == (POLLERR | POLLHUP), "then POLLERR|POLLHUP");
    check(so_error(c) == ECONNREFUSED, "SO_ERROR ECONNREFUSED");
    check(so_error(c) == 0, "SO_ERROR cleared by reading it");
    close(c);
}

/* Connect and accept one connection, both ends non-blocking. */
static void pair_tcp(int l, int *c, int *s) {
    *c = connect_nb(port_of(l, 0));
    wait_for(*c, POLLOUT, 5000);
    *s = accept_one(l);
}

static void half_close(void) {
    int l = listener(4), c, s;
    pair_tcp(l, &c, &s);
    check(write(c, "request", 7) == 7, "client writes");
    check(shutdown(c, SHUT_WR) == 0, "client shutdown(SHUT_WR)");
    char buf[64];
    wait_for(s, POLLIN, 5000);
    int n = 0, r;
    while ((r = read(s, buf + n, sizeof buf - n)) > 0)
        n += r;
    if (r < 0 && errno == EAGAIN) {
        wait_for(s, POLLIN | POLLRDHUP, 5000);
        while ((r = read(s, buf + n, sizeof buf - n)) > 0)
            n += r;
    }
    check(n == 7 && memcmp(buf, "request", 7) == 0 && r == 0, "server reads the data, then EOF");
    int ev = wait_for(s, POLLIN | POLLRDHUP, 0);
    check((ev & (POLLIN | POLLRDHUP)) == (POLLIN | POLLRDHUP), "server sees POLLIN|POLLRDHUP");
    check(write(s, "reply", 5) == 5, "server can still send");
    check(shutdown(s, SHUT_WR) == 0, "server shuts down too");
    wait_for(c, POLLIN, 5000);
    n = 0;
    for (int tries = 0; tries < 100; tries++) {
        r = read(c, buf + n, sizeof buf - n);
        if (r > 0) {
            n += r;
            continue;
        }
        if (r == 0)
            break;
        wait_for(c, POLLIN, 100);
    }
    check(n == 5 && memcmp(buf, "reply", 5) == 0 && r == 0, "client reads the reply, then EOF");
    errno = 0;
    check(send(c, "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "client write after SHUT_WR: EPIPE");
    close(c);
    close(s);
    close(l);
}

static volatile sig_atomic_t sigpipes;

static void on_sigpipe(int sig) {
    (void)sig;
    sigpipes++;
}

static void peer_closes(void) {
    int l = listener(4), c, s;
    pair_tcp(l, &c, &s);
    close(s);
    char buf[8];
    wait_for(c, POLLIN, 5000);
    check(read(c, buf, sizeof buf) == 0, "peer closed: EOF");
    /* The first write may still go out (the peer answers it with a reset);
     * from then on writes fail. */
    int err = 0;
    for (int i = 0; i < 100 && !err; i++) {
        if (send(c, "data", 4, MSG_NOSIGNAL) < 0)
            err = errno;
        else
            wait_for(c, POLLERR | POLLHUP, 100);
    }
    check(err == EPIPE, "write to a closed peer with MSG_NOSIGNAL: EPIPE");
    check(sigpipes == 0, "no SIGPIPE with MSG_NOSIGNAL");
    signal(SIGPIPE, on_sigpipe);
    errno = 0;
    check(write(c, "data", 4) == -1 && errno == EPIPE, "write without it: EPIPE");
    check(sigpipes == 1, "and one SIGPIPE, handled");
    signal(SIGPIPE, SIG_DFL);
    close(c);
    close(l);
}

static void backlog(void) {
    int l = listener(1);
    int port = port_of(l, 0);
    int c[4];
    for (int i = 0; i < 4; i++)
        c[i] = connect_nb(port);
    int accepted = 0, s[4];
    /* Some connect at once, the rest wait for the queue to drain (Linux
     * drops their SYNs and they retry); in the end all are accepted. */
    for (int rounds = 0; accepted < 4 && rounds < 200; rounds++) {
        if (wait_for(l, POLLIN, 100) & POLLIN) {
            int fd = accept4(l, NULL, NULL, SOCK_NONBLOCK);
            if (fd >= 0)
                s[accepted++] = fd;
        }
    }
    check(accepted == 4, "backlog 1, four clients: all accepted in the end");
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        wait_for(c[i], POLLOUT, 5000);
        ok &= so_error(c[i]) == 0 && send(c[i], "k", 1, 0) == 1;
    }
    check(ok, "and all connected without error");
    for (int i = 0; i < accepted; i++)
        close(s[i]);
    for (int i = 0; i < 4; i++)
        close(c[i]);
    close(l);
}

static void options(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int v, one = 1;
    socklen_t len = sizeof v;
    check(getsockopt(fd, SOL_SOCKET, SO_TYPE, &v, &len) == 0 && v == SOCK_STREAM, "SO_TYPE");
    check(setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == 0, "SO_REUSEADDR");
    len = sizeof v;
    check(getsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, &len) == 0 && v == 1, "reads back 1");
    check(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == 0, "TCP_NODELAY");
    len = sizeof v;
    check(getsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &v, &len) == 0 && v == 1, "reads back 1");
    check(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) == 0, "SO_KEEPALIVE");
    int idle = 60, intvl = 10, cnt = 5;
    check(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) == 0 &&
              setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) == 0 &&
              setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) == 0,
          "TCP_KEEPIDLE/INTVL/CNT");
    len = sizeof v;
    check(getsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &v, &len) == 0 && v == 60, "TCP_KEEPIDLE reads back");
    int zero = 0;
    errno = 0;
    check(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &zero, sizeof zero) == -1 && errno == EINVAL,
          "TCP_KEEPIDLE 0: EINVAL");
    int buf = 65536;
    check(setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf) == 0, "SO_RCVBUF");
    len = sizeof v;
    check(getsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, &len) == 0 && v == 2 * buf, "reads back doubled");
    errno = 0;
    check(setsockopt(fd, SOL_SOCKET, SO_TYPE, &one, sizeof one) == -1 && errno == ENOPROTOOPT,
          "SO_TYPE is read-only: ENOPROTOOPT");
    len = sizeof v;
    check(getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len) == 0 && v == 0, "SO_ACCEPTCONN 0");
    close(fd);
    errno = 0;
    check(socket(AF_INET, SOCK_STREAM | 0x100, 0) == -1 && errno == EINVAL, "unknown type flag: EINVAL");
    errno = 0;
    check(getsockopt(0, SOL_SOCKET, SO_TYPE, &v, &len) == -1 && errno == ENOTSOCK, "not a socket: ENOTSOCK");
}

static void unix_pair(void) {
    int sv[2];
    check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv) == 0, "socketpair(AF_UNIX)");
    check(write(sv[0], "ping", 4) == 4 && write(sv[1], "pong", 4) == 4, "both ends write");
    char buf[16] = {0};
    check(recv(sv[1], buf, sizeof buf, MSG_PEEK) == 4 && read(sv[1], buf, sizeof buf) == 4 &&
              memcmp(buf, "ping", 4) == 0,
          "peek then read");
    check(read(sv[0], buf, sizeof buf) == 4 && memcmp(buf, "pong", 4) == 0, "the other way");
    errno = 0;
    check(read(sv[0], buf, sizeof buf) == -1 && errno == EAGAIN, "empty: EAGAIN");
    shutdown(sv[0], SHUT_WR);
    check(read(sv[1], buf, sizeof buf) == 0, "SHUT_WR: the peer reads EOF");
    check(write(sv[1], "back", 4) == 4 && read(sv[0], buf, sizeof buf) == 4, "and can still send");
    struct sockaddr_un a;
    socklen_t len = sizeof a;
    check(getsockname(sv[0], (struct sockaddr *)&a, &len) == 0 && len == sizeof(sa_family_t), "unnamed");
    close(sv[1]);
    int ev = wait_for(sv[0], POLLIN | POLLOUT, 0);
    check((ev & POLLHUP) != 0, "peer closed: POLLHUP");
    errno = 0;
    check(send(sv[0], "x", 1, MSG_NOSIGNAL) == -1 && errno == EPIPE, "write: EPIPE");
    close(sv[0]);
}

static void unix_path(void) {
    const char *path = "/tmp/pgkraft-sockets-test";
    unlink(path);
    int l = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un a;
    memset(&a, 0, sizeof a);
    a.sun_family = AF_UNIX;
    strcpy(a.sun_path, path);
    socklen_t alen = offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1;
    check(bind(l, (struct sockaddr *)&a, alen) == 0, "bind AF_UNIX to a path");
    struct stat st;
    check(stat(path, &st) == 0 && S_ISSOCK(st.st_mode), "the path is a socket");
    int l2 = socket(AF_UNIX, SOCK_STREAM, 0);
    errno = 0;
    check(bind(l2, (struct sockaddr *)&a, alen) == -1 && errno == EADDRINUSE, "second bind: EADDRINUSE");
    close(l2);
    int c = socket(AF_UNIX, SOCK_STREAM, 0);
    errno = 0;
    check(connect(c, (struct sockaddr *)&a, alen) == -1 && errno == ECONNREFUSED, "not listening: ECONNREFUSED");
    close(c);
    check(listen(l, 5) == 0, "listen");
    c = socket(AF_UNIX, SOCK_STREAM, 0);
    check(connect(c, (struct sockaddr *)&a, alen) == 0, "connect");
    struct sockaddr_un p;
    socklen_t plen = sizeof p;
    int s = accept(l, (struct sockaddr *)&p, &plen);
    check(s >= 0 && plen == sizeof(sa_family_t), "accept: the client is unnamed");
    plen = sizeof p;
    check(getpeername(c, (struct sockaddr *)&p, &plen) == 0 && strcmp(p.sun_path, path) == 0 && plen == alen,
          "client's peer is the path");
    plen = sizeof p;
    check(getsockname(s, (struct sockaddr *)&p, &plen) == 0 && strcmp(p.sun_path, path) == 0,
          "accepted socket's name is the path");
    check(write(c, "over unix", 9) == 9, "write");
    char buf[16];
    check(read(s, buf, sizeof buf) == 9 && memcmp(buf, "over unix", 9) == 0, "read");
    errno = 0;
    check(open(path, O_RDONLY) == -1 && errno == ENXIO, "open(2) of a socket: ENXIO");
    close(s);
    close(c);
    close(l);
    check(unlink(path) == 0, "unlink the name");
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    fill_payloads();
    echo_with_poll();
    echo_with_epoll();
    nonblocking_connect_and_names();
    refused();
    half_close();
    peer_closes();
    backlog();
    options();
    unix_pair();
    unix_path();
    printf("%d failures\n", failures);
    return failures != 0;
}
