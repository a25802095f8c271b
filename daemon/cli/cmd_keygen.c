/*
 * cmd_keygen: `gastroscreen keygen NAME --out DIR [--roles "STAGE..."]`, a CURVE key pair for
 * one node of the service (stages/runtime/keys, PROTOCOL.md §2): DIR/NAME.key (the secret,
 * mode 0600, never overwritten) and DIR/NAME.pub (the public key, with a `roles = ...` line
 * when --roles is given: the stages a worker key may take). It prints the public key and the
 * files. The secret stays on the node that uses it; the .pub goes into the coordinator's keys
 * folder (workers/, clients/ or announcers/) and, for a worker, into every worker node's keys
 * folder too (tile inboxes admit tiler keys).
 *
 * Exit status: 0 when both files were written; 1 when they could not be (the secret exists
 * already, the folder cannot be written); 2 on a usage error.
 */
#include "daemon/cli/commands.h"

#include <getopt.h>
#include <stdio.h>

#include "ops/error.h"
#include "stages/runtime/fileio.h"
#include "stages/runtime/keys.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: gastroscreen keygen NAME --out DIR [--roles \"STAGE...\"]\n"
               "\n"
               "Writes a CURVE key pair: DIR/NAME.key (secret, mode 0600; an existing one is\n"
               "never overwritten) and DIR/NAME.pub (public). NAME is letters, digits, '.', '_'\n"
               "and '-'. With --roles (tiler foreground blur infer screener reporter) the .pub\n"
               "lists the stages a worker key may take. Copy the .pub into the coordinator's\n"
               "keys folder: workers/, clients/ or announcers/ (README, Running the service).\n"
               "\n"
               "  --out DIR       the folder to write to (created when missing)\n"
               "  --roles STAGES  worker keys: the stages, e.g. \"blur infer\"\n");
}

int gs_cmd_keygen(int argc, char **argv)
{
    const char *out = NULL, *roles = NULL;
    static const struct option opts[] = {{"out", required_argument, NULL, 'o'},
                                         {"roles", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    optind = 1;
    int ch;
    while ((ch = getopt_long(argc, argv, "o:r:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'o':
            out = optarg;
            break;
        case 'r':
            roles = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (argc - optind != 1 || !out) {
        fprintf(stderr, "gastroscreen keygen: %s\n",
                !out ? "--out DIR is required" : "give one NAME");
        usage(stderr);
        return 2;
    }
    unsigned bits;
    if (roles && gs_key_parse_roles(roles, &bits) < 0) {
        fprintf(stderr, "gastroscreen keygen: --roles: %s\n", gs_error_get());
        return 2;
    }
    const char *name = argv[optind];
    char pub[GS_KEY_Z85_LEN + 1];
    if (gs_mkdir_p(out, 0755) < 0 || gs_key_write_pair(out, name, roles, pub) < 0) {
        fprintf(stderr, "gastroscreen keygen: %s\n", gs_error_get());
        return 1;
    }
    printf("%s\n", pub);
    fprintf(stderr, "gastroscreen keygen: wrote %s/%s.key (secret, 0600) and %s/%s.pub%s%s\n", out,
            name, out, name, roles ? ", roles " : "", roles ? roles : "");
    return 0;
}
