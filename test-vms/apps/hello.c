/*
 * hello: argument and environment passing. Prints argc, every argv[i] and
 * every environment entry in the order the program received them, then
 * looks one variable up with getenv. The image bakes argv and env in from
 * the recipe; the differential harness runs the native binary with the same
 * argv (argv[0] included) and the same environment (env -i ...).
 */
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv)
{
    printf("argc: %d\n", argc);
    for (int i = 0; i < argc; i++)
        printf("argv[%d]: %s\n", i, argv[i]);
    printf("argv[argc] is NULL: %s\n", argv[argc] == NULL ? "yes" : "no");

    int n = 0;
    for (char **e = environ; e && *e; e++, n++)
        printf("env[%d]: %s\n", n, *e);
    printf("env count: %d\n", n);

    const char *greeting = getenv("GREETING");
    printf("getenv(GREETING): %s\n", greeting ? greeting : "(unset)");
    printf("hello, world\n");
    return 0;
}
