/*
 * volume-bench: 8 KiB page I/O on the data volume (argv[1], default /data):
 * pwrite+fdatasync at offsets cycling over 512 KiB of one file, then pread
 * of the same pages in a scattered order; prints median and p99 of each.
 * ci/bench-volume.sh runs it in the image (on a --volume) and natively on
 * the same host directory, alternating.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void report(const char *what, double *v, int n)
{
    qsort(v, n, sizeof *v, cmp);
    printf("%-22s median %8.1f us  p99 %8.1f us\n", what, v[n / 2], v[n * 99 / 100]);
}

#define N 300
int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/data";
    char path[256];
    snprintf(path, sizeof path, "%s/volume-bench.dat", dir);
    int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);
    if (fd < 0) { perror("open"); return 1; }
    static char page[8192];
    memset(page, 'x', sizeof page);
    static double a[N], b[N], c[N], d[N];
    for (int i = 0; i < N; i++) {
        double t0 = now_us();
        if (pwrite(fd, page, sizeof page, (off_t)(i % 64) * 8192) != 8192) { perror("pwrite"); return 1; }
        double t1 = now_us();
        if (fdatasync(fd) < 0) { perror("fdatasync"); return 1; }
        double t2 = now_us();
        a[i] = t1 - t0; b[i] = t2 - t1; c[i] = t2 - t0;
    }
    for (int i = 0; i < N; i++) {
        double t0 = now_us();
        if (pread(fd, page, sizeof page, (off_t)((i * 37) % 64) * 8192) != 8192) { perror("pread"); return 1; }
        d[i] = now_us() - t0;
    }
    report("pwrite 8 KiB", a, N);
    report("fdatasync", b, N);
    report("pwrite+fdatasync", c, N);
    report("pread 8 KiB", d, N);
    close(fd);
    unlink(path);
    return 0;
}
