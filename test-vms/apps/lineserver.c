/* A line server for the network tests: listens on TCP port argv[1]
 * (default 7000) on every address, serves any number of clients at once
 * with poll(), and answers each line "X" with "echo: X". "clients" is
 * answered with the number of connections it holds open (the tests count
 * leaked sockets with it). "hold" is answered "holding" and that
 * connection is never read again (the flood test fills it). A line "exit N" is answered "bye" and ends the
 * program with status N. Runs the same natively and in the image. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 1010
#define LINE_MAX_BYTES 4096

struct client {
    int fd;
    char in[LINE_MAX_BYTES];
    size_t in_len;
    int held; /* "hold": never read from this connection again */
};

static struct client clients[MAX_CLIENTS];

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                struct pollfd pfd = {.fd = fd, .events = POLLOUT};
                poll(&pfd, 1, 1000);
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Answers every whole line in c->in; returns the exit status asked for, or -1. */
static int open_clients(void) {
    int n = 0;
    for (int i = 0; i < MAX_CLIENTS; i++) {
        n += clients[i].fd >= 0;
    }
    return n;
}

static int serve_lines(struct client *c) {
    int status = -1;
    char *start = c->in;
    char *nl;
    while ((nl = memchr(start, '\n', c->in_len - (size_t)(start - c->in))) != NULL) {
        *nl = 0;
        char out[LINE_MAX_BYTES + 16];
        int n;
        if (strcmp(start, "hold") == 0) {
            c->held = 1;
            n = snprintf(out, sizeof out, "holding\n");
        } else if (strcmp(start, "clients") == 0) {
            n = snprintf(out, sizeof out, "clients: %d\n", open_clients());
        } else if (strncmp(start, "exit ", 5) == 0) {
            status = atoi(start + 5);
            n = snprintf(out, sizeof out, "bye\n");
        } else {
            n = snprintf(out, sizeof out, "echo: %s\n", start);
        }
        if (write_all(c->fd, out, (size_t)n) < 0) {
            break;
        }
        start = nl + 1;
    }
    size_t rest = c->in_len - (size_t)(start - c->in);
    memmove(c->in, start, rest);
    c->in_len = rest;
    return status;
}

int main(int argc, char **argv) {
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    signal(SIGPIPE, SIG_IGN);
    int ls = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((unsigned short)port)};
    if (ls < 0 || bind(ls, (struct sockaddr *)&a, sizeof a) < 0 || listen(ls, 64) < 0) {
        perror("lineserver: listen");
        return 1;
    }
    printf("lineserver: listening on port %d\n", port);
    fflush(stdout);
    for (int i = 0; i < MAX_CLIENTS; i++) {
        clients[i].fd = -1;
    }
    for (;;) {
        struct pollfd pfds[MAX_CLIENTS + 1];
        int map[MAX_CLIENTS + 1];
        int n = 0;
        pfds[n] = (struct pollfd){.fd = ls, .events = POLLIN};
        map[n++] = -1;
        for (int i = 0; i < MAX_CLIENTS; i++) {
            if (clients[i].fd >= 0 && !clients[i].held) {
                pfds[n] = (struct pollfd){.fd = clients[i].fd, .events = POLLIN};
                map[n++] = i;
            }
        }
        if (poll(pfds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("lineserver: poll");
            return 1;
        }
        if (pfds[0].revents & POLLIN) {
            int fd = accept(ls, NULL, NULL);
            if (fd >= 0) {
                int slot = -1;
                for (int i = 0; i < MAX_CLIENTS; i++) {
                    if (clients[i].fd < 0) {
                        slot = i;
                        break;
                    }
                }
                if (slot < 0) {
                    close(fd);
                } else {
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    clients[slot].fd = fd;
                    clients[slot].in_len = 0;
                    clients[slot].held = 0;
                }
            }
        }
        for (int k = 1; k < n; k++) {
            if (!pfds[k].revents) {
                continue;
            }
            struct client *c = &clients[map[k]];
            ssize_t r = read(c->fd, c->in + c->in_len, sizeof c->in - c->in_len);
            if (r <= 0) {
                close(c->fd);
                c->fd = -1;
                continue;
            }
            c->in_len += (size_t)r;
            int status = serve_lines(c);
            if (status >= 0) {
                for (int i = 0; i < MAX_CLIENTS; i++) {
                    if (clients[i].fd >= 0) {
                        close(clients[i].fd);
                    }
                }
                printf("lineserver: exit %d\n", status);
                return status;
            }
            if (c->in_len == sizeof c->in) {
                close(c->fd); /* a line longer than the buffer */
                c->fd = -1;
            }
        }
    }
}
