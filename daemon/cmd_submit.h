/*
 * cmd_submit: `gastroscreen submit PATH... [--external-id ID] [--config FILE]
 * [--endpoint submit=URL] [--timeout SECONDS]`, the reliable intake path (PROTOCOL.md §2, §13).
 *
 * Each PATH (made absolute; symlinks resolved when the file exists here) goes to the
 * coordinator's submit socket as a SubmitRequest; the reply is checked (request id echoed,
 * a known status, a well-formed slide id) and one line per path is printed on stdout:
 * "<slide_id> accepted|duplicate <path>". A refused path is reported on stderr with the
 * coordinator's reason. The coordinator journals an accepted slide before it answers, so an
 * "accepted" line means the slide will get a verdict.
 */
#ifndef GS_DAEMON_CMD_SUBMIT_H
#define GS_DAEMON_CMD_SUBMIT_H

/* Runs the command on argv (argv[0] is "submit"). Returns the exit status: 0 when every path
 * was accepted or was a duplicate, 1 when any was refused or got no valid reply (coordinator
 * not running, malformed reply), 2 on a usage error. */
int gs_cmd_submit(int argc, char **argv);

#endif
