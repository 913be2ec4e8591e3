/*
 * tls: thread-local storage of the (only) thread. _Thread_local variables
 * with initial values (.tdata) and without (.tbss), an over-aligned one, a
 * large zero-initialised array, a large initialised one, and errno (which
 * libc keeps per thread) set and read back. Exercises the TLS block the
 * library OS lays out and the thread pointer it installs (arch_prctl).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

static const char *yesno(int b) { return b ? "yes" : "no"; }

static _Thread_local int counter = 42;
static _Thread_local long long wide = -1234567890123LL;
static _Thread_local const char *label = "tls-label";
static _Thread_local int zeroed;
static _Thread_local _Alignas(64) unsigned char aligned64[3] = {1, 2, 3};
static _Thread_local unsigned char big_bss[256 * 1024];
static _Thread_local unsigned int big_data[4096] = {[0] = 7, [1] = 11, [4095] = 13};

/* noinline: make the compiler reach the variable through the thread pointer
 * from another function rather than fold the constant. */
__attribute__((noinline)) static int *counter_addr(void) { return &counter; }
__attribute__((noinline)) static int *errno_addr(void) { return &errno; }

int main(void)
{
    printf("initialised int: %d\n", counter);
    printf("initialised long long: %lld\n", wide);
    printf("initialised pointer: %s\n", label);
    printf("zero-initialised int: %d\n", zeroed);
    printf("64-byte aligned: %s, contents %d %d %d\n", yesno(((uintptr_t)aligned64 % 64) == 0), aligned64[0],
           aligned64[1], aligned64[2]);

    int *p = counter_addr();
    *p += 1;
    counter += 1;
    printf("counter after two increments: %d\n", counter);
    printf("same address from another function: %s\n", yesno(p == &counter));

    unsigned long sum = 0;
    for (size_t i = 0; i < sizeof big_bss; i++)
        sum += big_bss[i];
    printf("256 KiB TLS array zeroed: %s\n", yesno(sum == 0));
    for (size_t i = 0; i < sizeof big_bss; i++)
        big_bss[i] = (unsigned char)(i * 13);
    sum = 0;
    for (size_t i = 0; i < sizeof big_bss; i++)
        sum += big_bss[i];
    printf("256 KiB TLS array sum after writing: %lu\n", sum);

    unsigned long dsum = 0;
    for (size_t i = 0; i < 4096; i++)
        dsum += big_data[i];
    printf("16 KiB initialised TLS array sum: %lu\n", dsum);

    errno = 0;
    printf("errno starts at 0: %s\n", yesno(errno == 0));
    ssize_t rc = write(-1, "x", 1);
    int e = errno;
    printf("write to fd -1 fails with EBADF: %s\n", yesno(rc == -1 && e == EBADF));
    errno = 12345;
    printf("errno holds a value written to it: %s\n", yesno(errno == 12345));
    printf("&errno is the same in another function: %s\n", yesno(errno_addr() == &errno));
    printf("tls: done\n");
    return 0;
}
