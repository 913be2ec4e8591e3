/*
 * errno: failing system calls report the right errno, libc turns it into
 * the right message, and the exit status reaches the host. write to fd 99
 * (EBADF), mmap of length 0 (EINVAL), munmap of an unaligned address
 * (EINVAL), an unknown system call number (ENOSYS), then exit(3).
 * The messages are the same in glibc and musl for these four errors.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static void report(const char *what, long rc, int err, int want, const char *want_name)
{
    printf("%s: returned %ld, errno %s %s (%s)\n", what, rc, err == want ? "==" : "!=", want_name,
           strerror(err));
}

int main(void)
{
    errno = 0;
    long rc = (long)write(99, "x", 1);
    report("write(99)", rc, errno, EBADF, "EBADF");

    errno = 0;
    void *p = mmap(NULL, 0, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    report("mmap(len 0)", p == MAP_FAILED ? -1 : 0, errno, EINVAL, "EINVAL");

    /* A real mapping, so only the misalignment is wrong. */
    unsigned char *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        printf("mmap(8192) failed: %s\n", strerror(errno));
        return 1;
    }
    errno = 0;
    rc = munmap(m + 1, 4096);
    report("munmap(unaligned)", rc, errno, EINVAL, "EINVAL");
    munmap(m, 8192);

    errno = 0;
    rc = syscall(99999);
    report("syscall(99999)", rc, errno, ENOSYS, "ENOSYS");

    printf("errno values: EBADF=%d EINVAL=%d ENOSYS=%d\n", EBADF, EINVAL, ENOSYS);
    printf("exiting with status 3\n");
    fflush(stdout);
    return 3;
}
