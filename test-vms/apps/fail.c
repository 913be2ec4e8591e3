/*
 * fail: a write through a NULL pointer, to exercise the guest's page-fault
 * path (the library OS must report the fault and stop the VM with a failure
 * status rather than hang). Natively this dies of SIGSEGV, so it is not a
 * differential test; only the first line is common to both.
 */
#include <stdio.h>

int main(void)
{
    /* Both volatiles are needed: without the first, the compiler sees the
     * NULL and emits a trap instead of a store; without the second, it may
     * drop the store altogether (GCC 12 at -O2 does). */
    volatile int *volatile p = NULL;
    printf("about to write through a NULL pointer\n");
    fflush(stdout);
    *p = 42;
    printf("still alive after the write: this is a bug\n");
    return 0;
}
