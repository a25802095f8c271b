/*
 * cmd_status: `gastroscreen status [SLIDE] [--json] [--config FILE] [--endpoint query=URL]
 * [--timeout SECONDS]`, the state of slides as the coordinator's query socket tells it
 * (SlideStateRequest, PROTOCOL.md §11).
 *
 * SLIDE is a slide id (16 hex digits) or a slide path; without it every slide in flight is
 * listed. One line per slide: id, state, attempt, tiles done of planned, the verdict (class
 * and score) once there is one, and the path; for one slide also the verdict's reason,
 * warnings, report and model notice. --json prints the same as a JSON array instead.
 */
#ifndef GS_DAEMON_CMD_STATUS_H
#define GS_DAEMON_CMD_STATUS_H

/* Runs the command on argv (argv[0] is "status"). Returns the exit status: 0 when the
 * coordinator answered (an empty in-flight list included), 1 for an unknown slide, a
 * QueryError, no answer or a malformed answer, 2 on a usage error. */
int gs_cmd_status(int argc, char **argv);

#endif
