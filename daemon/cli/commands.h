/*
 * commands: the `gastroscreen` commands and the one table that names them.
 *
 * Each command is a function over argv (argv[0] is the command's name) returning the process
 * exit status: 0 success, 1 the input could not be processed (message on stderr naming the
 * file and the cause), 2 a usage error. Each command's file (daemon/cli/cmd_<name>.c) opens
 * with what the command does and its exit statuses in detail.
 *
 * gs_cli_commands is the only list of commands: gastroscreen's dispatcher finds a command in
 * it and its usage text is printed from it, so a command added here is both runnable and
 * documented.
 *
 *     const gs_cli_command *c = gs_cli_command_find(argv[1]);
 *     if (c) return c->run(argc - 1, argv + 1);
 *     gs_cli_usage(stderr);
 */
#ifndef GS_DAEMON_CLI_COMMANDS_H
#define GS_DAEMON_CLI_COMMANDS_H

#include <stdio.h>

typedef struct gs_cli_command {
    const char *name;
    const char *synopsis; /* arguments after the name, as the usage prints them */
    const char *summary;  /* one or two lines; '\n' breaks a line */
    int (*run)(int argc, char **argv);
} gs_cli_command;

/* The commands, in the order the usage lists them; ends with an entry whose name is NULL. */
extern const gs_cli_command gs_cli_commands[];

/* The command called name, or NULL when there is none. */
const gs_cli_command *gs_cli_command_find(const char *name);

/* Prints gastroscreen's usage (every command of the table with its synopsis and summary). */
void gs_cli_usage(FILE *f);

/* The commands; each returns the exit status described in its file. */
int gs_cmd_screen(int argc, char **argv);
int gs_cmd_tiles(int argc, char **argv);
int gs_cmd_infer(int argc, char **argv);
int gs_cmd_bench(int argc, char **argv);
int gs_cmd_calibrate(int argc, char **argv);
int gs_cmd_submit(int argc, char **argv);
int gs_cmd_announce(int argc, char **argv);
int gs_cmd_watch(int argc, char **argv);
int gs_cmd_status(int argc, char **argv);
int gs_cmd_top(int argc, char **argv);
int gs_cmd_keygen(int argc, char **argv);
int gs_cmd_eval(int argc, char **argv);
int gs_cmd_refine(int argc, char **argv);
int gs_cmd_dataset(int argc, char **argv);
int gs_cmd_features(int argc, char **argv);
int gs_cmd_view(int argc, char **argv);

#endif
