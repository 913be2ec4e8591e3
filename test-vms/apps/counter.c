/*
 * counter: a tiny stateful server on the console, for snapshot/resume tests.
 * Its state lives only in guest memory: a counter, a log of every command
 * (heap, so resume must bring back malloc'd pages too), a 1 MiB table
 * filled at start (bss, so the snapshot has real dirty pages), and the
 * last clock readings. It reads commands line by line from stdin:
 *
 *   add N   counter += N; prints "counter=C"
 *   get     prints "counter=C commands=K table=OK|BAD"
 *   time    prints whether CLOCK_MONOTONIC and CLOCK_REALTIME moved forward
 *           (>=) since the previous command; never prints times
 *   quit    prints "bye counter=C" and exits 0 (end of input does too)
 *
 * It prints "counter ready" once set up, then blocks reading stdin: the
 * natural point to snapshot it. Output is deterministic.
 */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TABLE_WORDS (1 << 18) /* 1 MiB of uint32_t */

static uint32_t table[TABLE_WORDS];
static long counter;
static long commands;
static char **log_lines;
static size_t log_len, log_cap;
static int64_t last_mono, last_real;

static int64_t now(clockid_t clk)
{
    struct timespec t;
    if (clock_gettime(clk, &t) != 0)
        return -1;
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int table_ok(void)
{
    for (uint32_t i = 0; i < TABLE_WORDS; i++)
        if (table[i] != i * 2654435761u)
            return 0;
    return 1;
}

static void remember(const char *line)
{
    if (log_len == log_cap) {
        log_cap = log_cap ? log_cap * 2 : 16;
        log_lines = realloc(log_lines, log_cap * sizeof *log_lines);
        if (!log_lines)
            exit(2);
    }
    log_lines[log_len++] = strdup(line);
}

/* Returns 0 to stop. */
static int command(const char *line)
{
    int64_t mono = now(CLOCK_MONOTONIC), real = now(CLOCK_REALTIME);
    int forward_mono = mono >= last_mono, forward_real = real >= last_real;
    last_mono = mono;
    last_real = real;
    commands++;
    remember(line);
    if (strncmp(line, "add ", 4) == 0) {
        counter += strtol(line + 4, NULL, 10);
        printf("counter=%ld\n", counter);
    } else if (strcmp(line, "get") == 0) {
        printf("counter=%ld commands=%ld table=%s\n", counter, commands, table_ok() ? "OK" : "BAD");
    } else if (strcmp(line, "time") == 0) {
        printf("monotonic forward: %s, realtime forward: %s\n", forward_mono ? "yes" : "no",
               forward_real ? "yes" : "no");
    } else if (strcmp(line, "quit") == 0) {
        return 0;
    } else {
        printf("unknown command: %s\n", line);
    }
    fflush(stdout);
    return 1;
}

int main(void)
{
    for (uint32_t i = 0; i < TABLE_WORDS; i++)
        table[i] = i * 2654435761u;
    last_mono = now(CLOCK_MONOTONIC);
    last_real = now(CLOCK_REALTIME);
    printf("counter ready\n");
    fflush(stdout);

    /* Chunked reads: each read is one VM exit, so never read byte by byte. */
    char buf[4096], line[256];
    size_t len = 0;
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf);
        if (n <= 0)
            break;
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n') {
                if (len < sizeof line - 1)
                    line[len++] = buf[i];
                continue;
            }
            line[len] = 0;
            len = 0;
            if (!command(line))
                goto done;
        }
    }
done:
    printf("bye counter=%ld\n", counter);
    return 0;
}
