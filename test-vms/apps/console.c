/*
 * console: standard input and output. Reads all of stdin with read(2) in
 * small chunks until end of input, then prints the byte and line counts and
 * the input in upper case (ASCII letters only; other bytes unchanged); then
 * one writev(2) of three buffers and its return value. The harness feeds
 * the same stdin natively and to the image.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

int main(void)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return 1;
    for (;;) {
        if (len == cap) {
            char *nb = realloc(buf, cap * 2);
            if (!nb)
                return 1;
            buf = nb;
            cap *= 2;
        }
        /* Small reads on purpose: a console delivers input in pieces. */
        size_t want = cap - len < 100 ? cap - len : 100;
        ssize_t n = read(0, buf + len, want);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            printf("read failed: %s\n", strerror(errno));
            return 1;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }

    size_t lines = 0;
    for (size_t i = 0; i < len; i++) {
        if (buf[i] == '\n')
            lines++;
        if (buf[i] >= 'a' && buf[i] <= 'z')
            buf[i] = (char)(buf[i] - 'a' + 'A');
    }
    printf("bytes: %zu\n", len);
    printf("lines: %zu\n", lines);
    printf("ends with newline: %s\n", len > 0 && buf[len - 1] == '\n' ? "yes" : "no");
    printf("--- input in upper case ---\n");
    fflush(stdout);
    /* Straight to fd 1 so that NUL bytes in the input come through too. */
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(1, buf + off, len - off);
        if (n <= 0)
            return 1;
        off += (size_t)n;
    }
    if (len > 0 && buf[len - 1] != '\n')
        printf("\n");
    printf("--- end ---\n");
    fflush(stdout);

    char a[] = "writev: one, ", b[] = "two, ", c[] = "three\n";
    struct iovec iov[3] = {
        {.iov_base = a, .iov_len = strlen(a)},
        {.iov_base = b, .iov_len = strlen(b)},
        {.iov_base = c, .iov_len = strlen(c)},
    };
    ssize_t w = writev(1, iov, 3);
    printf("writev returned %zd of %zu bytes\n", w, strlen(a) + strlen(b) + strlen(c));
    free(buf);
    return 0;
}
