/*
 * memory: the heap and anonymous mappings (brk, mmap, munmap, mprotect as
 * malloc and the program use them). malloc/free of many sizes with content
 * checks, realloc growth keeping contents, calloc zeroing (also of reused
 * memory), one 32 MiB allocation touched end to end, a 1 MiB anonymous
 * mmap that must arrive zeroed, mprotect, and sbrk(0). Only facts that hold
 * on any Linux libc are printed (never addresses or break positions), so
 * native and library-OS output compare byte for byte.
 */
#define _DEFAULT_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static const char *yesno(int b) { return b ? "yes" : "no"; }

static unsigned char pattern(size_t i, size_t seed) { return (unsigned char)((i * 31u + seed * 7u) & 0xff); }

static int fill_check(unsigned char *p, size_t n, size_t seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern(i, seed);
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(i, seed))
            return 0;
    return 1;
}

int main(void)
{
    /* Many sizes, all alive at once, then freed in a different order. */
    enum { N = 64 };
    static const size_t sizes[] = {1, 7, 16, 24, 100, 255, 4096, 4097, 65536, 131072, 200000, 1u << 20};
    const size_t nsizes = sizeof sizes / sizeof sizes[0];
    unsigned char *blocks[N];
    int ok = 1, aligned = 1;
    for (int i = 0; i < N; i++) {
        size_t n = sizes[i % nsizes] + (size_t)i;
        blocks[i] = malloc(n);
        if (!blocks[i]) {
            ok = 0;
            break;
        }
        aligned &= ((uintptr_t)blocks[i] % 16) == 0;
        ok &= fill_check(blocks[i], n, (size_t)i);
    }
    for (int i = 0; ok && i < N; i++) {
        size_t n = sizes[i % nsizes] + (size_t)i;
        for (size_t j = 0; j < n; j++)
            if (blocks[i][j] != pattern(j, (size_t)i))
                ok = 0;
    }
    for (int i = 0; i < N; i += 2)
        free(blocks[i]);
    for (int i = 1; i < N; i += 2)
        free(blocks[i]);
    printf("malloc %d blocks of %zu sizes: %s\n", N, nsizes, ok ? "ok" : "FAILED");
    printf("malloc results 16-byte aligned: %s\n", yesno(aligned));

    /* Churn: allocate and free in a loop; must not run out. */
    int churn = 1;
    for (int i = 0; i < 10000 && churn; i++) {
        void *p = malloc((size_t)(i % 500) * 16 + 1);
        churn = p != NULL;
        free(p);
    }
    printf("10000 malloc/free pairs: %s\n", churn ? "ok" : "FAILED");

    /* realloc growth keeps the old contents. */
    size_t n = 16;
    unsigned char *r = malloc(n);
    int kept = r != NULL && fill_check(r, n, 99);
    while (kept && n < (4u << 20)) {
        size_t m = n * 4;
        unsigned char *q = realloc(r, m);
        if (!q) {
            kept = 0;
            break;
        }
        r = q;
        for (size_t i = 0; i < n; i++)
            if (r[i] != pattern(i, 99))
                kept = 0;
        fill_check(r, m, 99);
        n = m;
    }
    printf("realloc 16 B -> %zu MiB keeps contents: %s\n", n >> 20, yesno(kept));
    unsigned char *shrunk = realloc(r, 10);
    printf("realloc shrink keeps prefix: %s\n", yesno(shrunk && shrunk[9] == pattern(9, 99)));
    free(shrunk);

    /* calloc is zeroed, including memory that malloc handed out before. */
    unsigned char *dirty = malloc(3000);
    if (dirty)
        memset(dirty, 0xa5, 3000);
    free(dirty);
    int zero = 1;
    for (int round = 0; round < 4; round++) {
        size_t cn = round == 3 ? (size_t)5 << 20 : 3000;
        unsigned char *c = calloc(cn, 1);
        if (!c) {
            zero = 0;
            break;
        }
        for (size_t i = 0; i < cn; i++)
            zero &= c[i] == 0;
        free(c);
    }
    printf("calloc zeroed: %s\n", yesno(zero));
    /* volatile: the compiler would otherwise refuse the call it can see overflows. */
    volatile size_t huge = SIZE_MAX / 2;
    void *over = calloc(huge, 4);
    printf("calloc overflow refused: %s\n", yesno(over == NULL));
    free(over);

    /* sbrk(0) answers, and the break never moves down while memory is held. */
    void *brk_before = sbrk(0);
    printf("sbrk(0) works: %s\n", yesno(brk_before != (void *)-1));

    /* One big allocation, every page touched and checked. */
    size_t big_n = (size_t)32 << 20;
    unsigned char *big = malloc(big_n);
    int big_ok = big != NULL;
    for (size_t i = 0; big_ok && i < big_n; i += 4096)
        big[i] = (unsigned char)(i >> 12);
    for (size_t i = 0; big_ok && i < big_n; i += 4096)
        big_ok = big[i] == (unsigned char)(i >> 12);
    printf("malloc 32 MiB, every page written and read back: %s\n", big_ok ? "ok" : "FAILED");
    void *brk_after = sbrk(0);
    printf("break did not move down: %s\n", yesno((uintptr_t)brk_after >= (uintptr_t)brk_before));
    free(big);

    /* Anonymous mmap: page aligned, zeroed, writable, unmappable. */
    size_t mn = (size_t)1 << 20;
    unsigned char *m = mmap(NULL, mn, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) {
        printf("mmap 1 MiB: FAILED\n");
        return 1;
    }
    int mz = 1;
    for (size_t i = 0; i < mn; i++)
        mz &= m[i] == 0;
    printf("mmap 1 MiB: ok, page aligned: %s, zeroed: %s\n", yesno((uintptr_t)m % 4096 == 0), yesno(mz));
    printf("mmap memory writable: %s\n", yesno(fill_check(m, mn, 5)));
    printf("mprotect read-only returns 0: %s\n", yesno(mprotect(m, mn, PROT_READ) == 0));
    printf("contents survive mprotect: %s\n", yesno(m[12345] == pattern(12345, 5)));
    printf("mprotect read-write returns 0: %s\n", yesno(mprotect(m, mn, PROT_READ | PROT_WRITE) == 0));
    m[0] = 1;
    printf("munmap returns 0: %s\n", yesno(munmap(m, mn) == 0));

    /* Several mappings at once do not overlap. */
    unsigned char *a = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    unsigned char *b = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int distinct = a != MAP_FAILED && b != MAP_FAILED && (a + 8192 <= b || b + 8192 <= a);
    printf("two 8 KiB mappings are disjoint: %s\n", yesno(distinct));
    if (a != MAP_FAILED)
        munmap(a, 8192);
    if (b != MAP_FAILED)
        munmap(b, 8192);

    printf("page size: %ld\n", sysconf(_SC_PAGESIZE));
    printf("memory: done\n");
    return 0;
}
