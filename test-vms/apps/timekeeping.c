/*
 * timekeeping: clocks and sleeping. CLOCK_MONOTONIC never goes backwards
 * over 1000 reads, nanosleep(20 ms) takes at least 20 ms (and less than
 * 2 s) by CLOCK_MONOTONIC, CLOCK_REALTIME is a date no earlier than 2024,
 * clock_getres answers for both clocks, time() agrees with CLOCK_REALTIME.
 * Only yes/no facts are printed, never times.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

static const char *yesno(int b) { return b ? "yes" : "no"; }

static int64_t ns(const struct timespec *t) { return (int64_t)t->tv_sec * 1000000000 + t->tv_nsec; }

static int64_t now(clockid_t clk)
{
    struct timespec t;
    if (clock_gettime(clk, &t) != 0)
        return -1;
    return ns(&t);
}

int main(void)
{
    struct timespec t;
    printf("clock_gettime(CLOCK_MONOTONIC) returns 0: %s\n", yesno(clock_gettime(CLOCK_MONOTONIC, &t) == 0));
    printf("tv_nsec in range: %s\n", yesno(t.tv_nsec >= 0 && t.tv_nsec < 1000000000));

    int64_t prev = now(CLOCK_MONOTONIC);
    int nondecreasing = prev >= 0;
    int64_t first = prev;
    for (int i = 0; i < 1000; i++) {
        int64_t cur = now(CLOCK_MONOTONIC);
        nondecreasing &= cur >= prev;
        prev = cur;
    }
    printf("monotonic non-decreasing over 1000 reads: %s\n", yesno(nondecreasing));
    printf("monotonic within 1 s over 1000 reads: %s\n", yesno(prev - first < 1000000000));

    struct timespec req = {.tv_sec = 0, .tv_nsec = 20 * 1000 * 1000};
    int64_t before = now(CLOCK_MONOTONIC);
    int rc = nanosleep(&req, NULL);
    int64_t slept = now(CLOCK_MONOTONIC) - before;
    printf("nanosleep(20 ms) returns 0: %s\n", yesno(rc == 0));
    printf("slept at least 20 ms: %s\n", yesno(slept >= 20 * 1000 * 1000));
    printf("slept less than 2 s: %s\n", yesno(slept < 2000 * 1000 * 1000LL));
    printf("monotonic increased across the sleep: %s\n", yesno(slept > 0));

    struct timespec bad = {.tv_sec = 0, .tv_nsec = 1000000000};
    errno = 0;
    rc = nanosleep(&bad, NULL);
    printf("nanosleep with tv_nsec = 1e9 fails with EINVAL: %s\n", yesno(rc == -1 && errno == EINVAL));

    struct timespec rt;
    printf("clock_gettime(CLOCK_REALTIME) returns 0: %s\n", yesno(clock_gettime(CLOCK_REALTIME, &rt) == 0));
    struct tm tm;
    int have_tm = gmtime_r(&rt.tv_sec, &tm) != NULL;
    printf("realtime year >= 2024: %s\n", yesno(have_tm && tm.tm_year + 1900 >= 2024));
    time_t tt = time(NULL);
    printf("time() within 2 s of CLOCK_REALTIME: %s\n", yesno(tt - rt.tv_sec >= -2 && tt - rt.tv_sec <= 2));

    struct timespec res;
    rc = clock_getres(CLOCK_MONOTONIC, &res);
    printf("clock_getres(CLOCK_MONOTONIC) returns 0: %s\n", yesno(rc == 0));
    printf("monotonic resolution between 1 ns and 1 ms: %s\n",
           yesno(rc == 0 && ns(&res) >= 1 && ns(&res) <= 1000000));
    rc = clock_getres(CLOCK_REALTIME, &res);
    printf("clock_getres(CLOCK_REALTIME) returns 0: %s\n", yesno(rc == 0));
    printf("realtime resolution between 1 ns and 1 ms: %s\n",
           yesno(rc == 0 && ns(&res) >= 1 && ns(&res) <= 1000000));
    printf("timekeeping: done\n");
    return 0;
}
