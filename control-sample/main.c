/*
 * legate-control: the sample xDS v3 control plane.
 */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "--version") == 0)) {
        printf("legate-control version 0.1.0\n");
        return 0;
    }
    fprintf(stderr, "legate-control: the ADS server is not built yet\n");
    return 1;
}
