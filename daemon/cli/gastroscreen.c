/*
 * gastroscreen: the command-line tool. The commands and their usage come from one table
 * (daemon/cli/commands.h); this file only dispatches.
 */
#include <stdio.h>
#include <string.h>

#include "daemon/cli/commands.h"

int main(int argc, char **argv)
{
    if (argc < 2) {
        gs_cli_usage(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
        gs_cli_usage(stdout);
        return 0;
    }
    if (!strcmp(cmd, "--version")) {
        printf("gastroscreen %s\n", GS_VERSION);
        return 0;
    }
    const gs_cli_command *c = gs_cli_command_find(cmd);
    if (c)
        return c->run(argc - 1, argv + 1);
    fprintf(stderr, "gastroscreen: unknown command '%s'\n", cmd);
    gs_cli_usage(stderr);
    return 2;
}
